"""Pre-training throughput: radiographs/s and studies/s, peak memory and model FLOP utilisation,
for fp32 eager, bf16 autocast and bf16 + torch.compile, at the smoke, demo and paper sizes.

Everything goes through the real training code: a :class:`refers_lite.training.pretrain.Pretrainer` on a
placeholder source domain in the real on-disk layout (uint8 films in the memory-mapped cache,
``studies.csv``, report tokenizer), so a step is: uint8 batch copied to the device, augmented
there (crop, rotation, brightness, contrast), REFERS forward with both tasks, backward, gradient
clipping, optimiser step, schedule. Two measurements per variant:

* ``step``: the same batch, already on the device, stepped again and again (the model's speed);
* ``e2e``: the training loop reading from the loader (workers, pinned memory, the copy, the
  augmentation): what a pre-training run gets.

The paper size: ViT-B/16 at 224 px with recurrent concatenation, 3 views, view fusion, a
BERT-base-sized text encoder (12 x 768, untrained weights: the timing does not depend on them and
no BERT-base ships offline), the 6 x 512 report transformer. Every variant pads reports and texts to
the profile's maximum lengths (128 tokens at the paper size), as a compiled run does.

    python benchmarks/pretrain_throughput.py --sizes paper --studies 2 --steps 3        # the CPU
    python benchmarks/pretrain_throughput.py --device cuda --sizes smoke,demo,paper --studies 32
    python benchmarks/pretrain_throughput.py --device cuda --sizes paper --studies 128 --variants bf16+compile

Variants alternate step by step (``step``) so machine noise hits them alike; read the ratios.
FLOPs are counted once per size with ``torch.utils.flop_counter`` on the eager model (forward +
backward); MFU = FLOPs per step / seconds per step / the device's dense bf16 peak (``--peak-tflops``,
known for some GPUs, none on CPUs). Prints a table and one JSON line per size.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from refers_lite.config import get_config
from refers_lite.data.loading.source_studies import SourceStudies, write_placeholder_source
from refers_lite.training.pretrain import Pretrainer, to_device

# dense bf16 tensor-core peaks (no sparsity), TFLOP/s
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0, "T4": 65.0}

PAPER_TEXT = {"text_encoder": "random", "random_text_width": 768, "random_text_depth": 12, "random_text_heads": 12}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, val in PEAK_BF16_TFLOPS.items():  # most specific names first
        if key in name:
            return val
    return None


# Two more variants, to ask whether any bf16 mode could reach a target on a CPU; neither is a training mode
# of the library: "bf16-weights" casts the whole model to bf16 and steps it without autocast (no fp32 master
# weights: the upper end of what bf16 can give, not a recipe); "fp32+bf16mm" keeps fp32 and lets oneDNN do
# the matrix products in bf16 (torch.backends.mkldnn.matmul.fp32_precision = "bf16", the CPU's TF32).
# "bf16+flash" is bf16 with SDPA's own kernel choice in the radiograph transformer (flash on a CPU), where the
# library picks the math kernel on a CPU under bf16 (radiograph_transformer.MATH_ATTENTION_ON_CPU_BF16).
VARIANTS = ("fp32", "bf16", "bf16+compile", "bf16-weights", "fp32+bf16mm", "bf16+flash")


def make_config(size: str, variant: str, studies: int, device: str, workers: int):
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    over = {"train": {"batch_size": studies, "max_steps": 10_000, "warmup_steps": 10, "device": device,
                      "precision": "bf16" if variant.startswith("bf16") and variant != "bf16-weights" else "fp32",
                      "compile": variant.endswith("+compile"), "num_workers": workers, "log_every": 1_000_000,
                      "ckpt_every": 1_000_000},
            "model": {"decoder_dropout": 0.0, "max_report_len": 128},
            "data": {"source": "source", "hflip_prob": 0.5}}
    if size == "paper":
        over["model"].update(PAPER_TEXT)  # smoke: a tiny random BERT; demo: MiniLM (its own profile)
    return get_config(size, over)


@contextlib.contextmanager
def sdpa_own_choice(on: bool):
    """The radiograph transformer leaves SDPA's kernel choice to PyTorch on a CPU under bf16 while ``on``."""
    from refers_lite.models import radiograph_transformer as rt
    old = rt.MATH_ATTENTION_ON_CPU_BF16
    rt.MATH_ATTENTION_ON_CPU_BF16 = not on
    try:
        yield
    finally:
        rt.MATH_ATTENTION_ON_CPU_BF16 = old


@contextlib.contextmanager
def bf16_matmuls(on: bool):
    """fp32 matrix products computed in bf16 by oneDNN (CPU) while ``on``."""
    old = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = "bf16" if on else "none"
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = old


def count_flops(trainer: Pretrainer, batch: dict) -> float:
    """FLOPs of one forward + backward (matmuls, convolutions, attention), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode
    from refers_lite.training.pretrain import model_inputs
    b = trainer.prepare(dict(batch), train=True)
    counter = FlopCounterMode(display=False)
    with counter, trainer.precision.autocast(trainer.device):
        out = trainer.module(**model_inputs(b))
        out.losses.total.backward()
    trainer.opt.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_size(size: str, args, root: Path) -> dict:
    device = torch.device(args.device)
    variants = args.variants.split(",")
    trainers, batches = {}, {}
    cfg0 = make_config(size, variants[0], args.studies, args.device, args.workers)
    train_set = SourceStudies(root, "train", max_report_len=cfg0.model.max_report_len)
    val_set = SourceStudies(root, "validation", report_tokenizer=train_set.report_tokenizer)
    for v in variants:
        cfg = make_config(size, v, args.studies, args.device, args.workers)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr = Pretrainer(cfg, train_set, val_set, Path(tempfile.mkdtemp(dir=root)), progress=False)
        tr.collate.fixed_length = True  # every variant sees the same shapes (compiled ones need them fixed)
        if v == "bf16-weights":
            tr.module.to(torch.bfloat16)
            enc = tr.module.encoder
            enc.forward_tokens = functools.partial(lambda f, x: f(x.to(torch.bfloat16)), enc.forward_tokens)
        trainers[v] = tr
        loader = tr._loader(tr.train_set, tr.sampler, drop_last=True)
        batches[v] = to_device(next(iter(loader)), device)
    n_params = sum(p.numel() for p in trainers[variants[0]].module.parameters())
    flops = count_flops(trainers[variants[0]], batches[variants[0]])
    peak = peak_tflops(device, args.peak_tflops)

    def step(v: str) -> float:
        with bf16_matmuls(v == "fp32+bf16mm"), sdpa_own_choice(v == "bf16+flash"):
            sync(device)
            t0 = time.perf_counter()
            trainers[v].train_step(batches[v])
            sync(device)
            return time.perf_counter() - t0

    def say(msg: str) -> None:
        print(f"  [{size}] {msg}", file=sys.stderr, flush=True)

    warm, times, peak_mem, e2e = {}, {v: [] for v in variants}, {}, {}
    for v in variants:  # warm-up (compilation happens here)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step(v)
        warm[v] = time.perf_counter() - t0
        say(f"{v}: warm-up {warm[v]:.1f} s")
    for _ in range(args.steps):  # variants alternate so that machine noise hits them alike
        for v in variants:
            times[v].append(step(v))
    for v in variants:
        say(f"{v}: {statistics.median(times[v]):.4f} s/step")
        if device.type == "cuda":  # peak memory of each variant alone
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            step(v)
            peak_mem[v] = torch.cuda.max_memory_allocated(device) / 2**30
    if args.e2e_steps:
        for v in variants:  # the loop as pre-training runs it: loader, copy, augmentation, step
            tr = trainers[v]
            tr.sampler.set_epoch(1)
            loader = tr._loader(tr.train_set, tr.sampler, drop_last=True)
            it = iter(loader)
            n, t0 = 0, None
            for i in range(args.e2e_steps + 2):
                try:
                    b = next(it)
                except StopIteration:
                    tr.sampler.set_epoch(tr.sampler.epoch + 1)
                    it = iter(loader)
                    b = next(it)
                with bf16_matmuls(v == "fp32+bf16mm"), sdpa_own_choice(v == "bf16+flash"):
                    tr.train_step(to_device(b, device))
                if i == 1:  # the first two steps start the workers
                    sync(device)
                    t0 = time.perf_counter()
                elif i > 1:
                    n += 1
            sync(device)
            e2e[v] = (time.perf_counter() - t0) / n
            say(f"{v}: end to end {e2e[v]:.4f} s/step")
    m = cfg0.model
    views = args.studies * m.num_views
    result = {"size": size, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              (platform.processor() or platform.machine()), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "studies_per_step": args.studies, "radiographs_per_step": views,
              "image_size": m.image_size, "params_m": round(n_params / 1e6, 1), "gflops_per_step": round(flops / 1e9, 1),
              "peak_tflops": peak, "variants": {}}
    base = statistics.median(times[variants[0]])
    print(f"\n{size}: {n_params / 1e6:.1f}M parameters, {args.studies} studies x {m.num_views} views at {m.image_size}px, "
          f"{flops / 1e9:.1f} GFLOP per step, device={result['device']}, threads={torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    print(f"{'variant':<14} {'s/step':>8} {'radiographs/s':>14} {'studies/s':>10} {'speed-up':>9} {'MFU':>6} "
          f"{'peak GiB':>9} {'e2e radiographs/s':>18} {'warm-up s':>10}")
    for v in variants:
        med = statistics.median(times[v])
        mfu = flops / med / (peak * 1e12) if peak else None
        r = {"s_per_step": round(med, 5), "radiographs_per_s": round(views / med, 2), "studies_per_s": round(args.studies / med, 2),
             "speedup": round(base / med, 3), "mfu": round(mfu, 4) if mfu else None,
             "peak_mem_gib": round(peak_mem[v], 2) if v in peak_mem else None,
             "e2e_radiographs_per_s": round(views / e2e[v], 2) if v in e2e else None, "warmup_s": round(warm[v], 1)}
        result["variants"][v] = r
        print(f"{v:<14} {med:>8.4f} {r['radiographs_per_s']:>14.2f} {r['studies_per_s']:>10.2f} {r['speedup']:>8.2f}x "
              f"{(f'{100 * mfu:.1f}%' if mfu else 'n/a'):>6} {(f'{peak_mem[v]:.2f}' if v in peak_mem else 'n/a'):>9} "
              f"{(f'{views / e2e[v]:.1f}' if v in e2e else 'n/a'):>18} {warm[v]:>10.1f}")
    print(json.dumps(result))
    del trainers, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="paper", help="comma-separated profiles: smoke,demo,paper")
    ap.add_argument("--variants", default="fp32,bf16,bf16+compile", help=f"of {', '.join(VARIANTS)} (first = baseline)")
    ap.add_argument("--studies", type=int, default=2, help="studies per step (x3 radiographs)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (compilation)")
    ap.add_argument("--e2e-steps", type=int, default=0, help="also time this many steps of the full loop (loader included)")
    ap.add_argument("--workers", type=int, default=2, help="loader worker processes for --e2e-steps")
    ap.add_argument("--n-studies", type=int, default=0, help="placeholder studies (default: enough for the steps)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 eager on tensor cores: the fair fp32 baseline
        torch.backends.cudnn.allow_tf32 = True
    n = args.n_studies or max(64, int(args.studies * 1.6 * (3 + args.e2e_steps)))
    results = []
    with tempfile.TemporaryDirectory(prefix="refers_bench_") as tmp:
        t0 = time.perf_counter()
        root = write_placeholder_source(Path(tmp) / "source", n_studies=n, views_per_study=(1, 4), seed=0)
        print(f"placeholder source domain: {n} studies in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for size in args.sizes.split(","):
            results.append(bench_size(size, args, root))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
