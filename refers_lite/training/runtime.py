"""The runtime that pre-training, fine-tuning, the baselines and evaluation share: which device and precision
a run uses, its seeds and RNG state (saved in a checkpoint and restored on resume), the learning-rate schedule,
and which settings a resumed run may change."""
from __future__ import annotations

import math
import random
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .distributed import local_rank

__all__ = ["Precision", "RESUMABLE_CHANGES", "cpu_has_native_bf16", "resolve_device", "resolve_precision",
           "rng_state", "seed_everything", "set_rng_state", "takes_weight_decay", "warmup_cosine"]


# -- device and precision ----------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    return dev


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "bf16" | "fp16"
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    use_scaler: bool
    reason: str = "asked for"  # why this precision (what ``auto`` found), for the log

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX512-BF16 or AMX), as oneDNN sees it.

    Without it, bf16 autocast on the CPU is emulated: on an AVX2-only AMD EPYC the demo pre-training step
    took 12.64 s in bf16 against 0.88 s in fp32 (``benchmarks/pretrain_throughput.py``, 14x slower)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without oneDNN: assume emulation
        return False


_PRECISIONS = {"fp32": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``auto``: bf16 where the device has it in hardware (CUDA with bf16; a CPU with AVX512-BF16 or AMX),
    fp16 + GradScaler on an older CUDA GPU, fp32 elsewhere (a CPU without native bf16 would emulate it,
    many times slower than fp32). The chosen precision carries the reason, for the log."""
    reason = "asked for"
    if name == "auto":
        if device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
            name, reason = ("bf16", "auto: this GPU supports bf16") if bf16 else \
                ("fp16", "auto: this GPU has no bf16, fp16 with a GradScaler")
        elif device.type == "cpu" and cpu_has_native_bf16():
            name, reason = "bf16", "auto: this CPU has bf16 in hardware (AVX512-BF16 / AMX)"
        elif device.type == "cpu":
            name, reason = "fp32", "auto: this CPU has no native bf16 (it would be emulated, many times slower)"
        else:
            name, reason = "fp32", f"auto: no mixed precision on {device.type}"
    dtype, scaler = _PRECISIONS[name]
    return Precision(name, dtype, scaler, reason)


# -- learning-rate schedule ------------------------------------------------------------------


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def takes_weight_decay(p: torch.Tensor) -> bool:
    """The one weight-decay rule of every optimiser here (pre-training, fine-tuning, MoCo; nanoGPT's): decay on
    parameters of two or more dimensions (weights of linear, convolution and embedding layers), none on biases and
    normalisation weights."""
    return p.ndim >= 2


# -- RNG state ---------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuplify(state["python"]))
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(i) for i in x) if isinstance(x, (list, tuple)) else x


# -- resumption --------------------------------------------------------------------------------


# Settings that may change between a run and its resumption (another machine, more workers):
# they do not change what is computed.
RESUMABLE_CHANGES = {"train.device", "train.num_workers", "train.log_every", "train.ckpt_every", "train.compile",
                     "train.grad_checkpointing"}
