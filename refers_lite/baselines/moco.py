"""Our implementation of a MoCo v2-style baseline: image-only contrastive pre-training of the
radiograph transformer on the source-domain radiographs.

The paper compares REFERS with self-supervised, image-only pre-training; C2L (Zhou et al., 2020),
one of those baselines, is built on MoCo. This module is NOT C2L (no mixup of images and features,
no C2L schedule): it is a MoCo v2-style baseline (He et al., 2020; Chen et al., 2020) of the SAME
radiograph transformer REFERS pre-trains, on the SAME source radiographs, exported in the same
encoder file format, so that the fine-tuning code treats it like any other pre-trained encoder
(``refers_lite.training.checkpoint.load_image_encoder``).

What is computed
    * Query encoder: the radiograph transformer (its aggregation embedding, (B, D)) followed by
      MoCo v2's two-layer MLP projection head D -> D -> ReLU -> 128, output L2-normalised.
    * Key encoder: a momentum copy of both (no gradient): after every optimiser step
      ``k <- m k + (1 - m) q`` with ``m = 0.999``. (MoCo updates at the start of the next forward,
      with the same query weights; updating right after the step is the same sequence of key
      encoders and makes the rule checkable after one step.)
    * A queue of ``K`` negatives (default 4,096) of past keys, L2-normalised, first filled with
      random unit vectors as in MoCo, then replaced first in, first out; it wraps around, so ``K``
      need not be a multiple of the batch. For small data ``K`` is clamped to
      ``n_images - batch_size`` (more entries than other images would only hold stale copies of
      the same pictures).
    * InfoNCE with temperature 0.2: logits ``[q.k+, q.queue]`` / T, (B, 1 + K), label 0 (the
      positive first); the queue used is the one before this batch's keys are pushed.
    * Two views of every radiograph, augmented independently on the device:
      :class:`~refers_lite.data.loading.gpu_augment.StudyAugment` called twice (each call draws new crop
      positions, rotations, brightness and contrast from the run's generator) with the run
      config's ``data`` parameters (REFERS' crop 224 / 256, +-10 degrees, brightness and contrast
      0.2), then a random horizontal flip per view (p = 0.5; an image-only method has no report
      to swap sides in). These are milder than MoCo v2's ImageNet augmentations (random resized
      crop from 20 %, colour jitter, grayscale, blur): the same as REFERS sees, as MoCo-CXR argues
      for radiographs.
    * The transformer has only LayerNorm, so MoCo's shuffled BatchNorm is not needed; one process.
    * Optimiser as REFERS: SGD (momentum ``cfg.train.momentum`` = 0.9, weight decay
      ``cfg.train.weight_decay`` = 1e-4 not on norms and biases), lr 3e-3, or, where REFERS pre-trains with
      AdamW (the course profiles; the experiment grid passes ``optimizer="adamw"`` and REFERS's ``lr_vision``),
      AdamW with betas (0.9, 0.999) and the same decay; linear warm-up then
      cosine to zero (warm-up: the same fraction of the run as the REFERS profile's,
      ``train.warmup_steps / train.max_steps``, unless given), gradient clipping
      ``cfg.train.grad_clip``; mixed precision as REFERS (``resolve_precision``).

What to expect at small scale (measured on the smoke transformer, 32 px, width 32, depth 2, CPU)
    At initialisation the aggregation embeddings of different radiographs are nearly identical
    (mean cosine ~0.996 on random images). With this SGD recipe (lr 0.03 to 0.3, m = 0.99 or
    0.999) the features did not become discriminative in 600 steps, on placeholder films or on
    random-noise images: a two-view, in-batch probe stayed at chance and the features collapsed
    further. The training loss still moves below log(1 + K) because the queue holds keys of older
    key encoders. The same ViT could not memorise 16 images with supervised SGD in 100 steps
    either; AdamW (1e-3) could in ~40. MoCo with AdamW at m = 0.999 only began to separate images
    after ~175 steps. The ``demo`` profile of REFERS uses AdamW for this reason. So a short
    CPU-sized run of this baseline gives an encoder close to a random initialisation. At ``demo``
    (1,800 steps of 124 films, AdamW at 1e-3 or 1e-4) the loss stayed near log(1 + K) all run and the
    encoder fine-tuned at 1 % of the labels about as a random start does (``benchmarks/moco_at_demo.py``,
    ``book/demo_diagnosis.md``): the films, rendered from one CT, differ less from each other than two
    augmented views of one film do. The paper's scale (ViT-B, 224 px, many more steps) was not measured here.

Files in ``out_dir``: ``settings.json`` (what decides the result), ``metrics.jsonl`` (one line per
``cfg.train.log_every`` steps: step, loss, lr, positive top-1 accuracy), ``last.pt`` (the whole
run: MoCo with its queue, optimiser, scheduler, scaler, RNG states, step; every
``cfg.train.ckpt_every`` steps, written atomically) and finally ``encoder.pt`` (the query
radiograph transformer in ``ENCODER_FORMAT``). Data order and augmentation depend only on the
seed and the step, so a run killed and resumed ends with the same weights as one never
interrupted.
"""
from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..training.checkpoint import (ENCODER_FORMAT, CheckpointError, load_checkpoint, load_state_dict_strict,
                                   save_checkpoint, save_image_encoder)
from ..config import Config, ModelConfig, get_config
from ..data.loading.source_studies import SourceRadiographs
from ..files import atomic_write
from ..models.radiograph_transformer import RadiographTransformer
from ..training.run_lock import RunFiles
from ..viz.plots import truncate_metrics
from ..training.runtime import (RESUMABLE_CHANGES, resolve_device, resolve_precision, rng_state, seed_everything,
                                set_rng_state, takes_weight_decay, warmup_cosine)

__all__ = ["MoCo", "MoCoOutput", "MoCoPretrainer", "build_optimizer", "pretrain_moco", "MOCO_TRAIN_FORMAT",
           "METHOD"]

MOCO_TRAIN_FORMAT = "refers_lite.moco_pretrain.v1"
METHOD = "moco_v2"
MOCO_OPTIMIZERS = ("sgd", "adamw")


# -- the model ---------------------------------------------------------------------------------


@dataclass
class MoCoOutput:
    loss: torch.Tensor  # () InfoNCE
    logits: torch.Tensor  # (B, 1 + K): the positive first, then the queue, divided by T
    queries: torch.Tensor  # (B, dim) L2-normalised
    keys: torch.Tensor  # (B, dim) L2-normalised, what was pushed into the queue


class MoCo(nn.Module):
    """MoCo v2 around a radiograph transformer: query / momentum key encoders, projection heads, queue."""

    def __init__(self, encoder: RadiographTransformer, dim: int = 128, queue_size: int = 4096,
                 momentum: float = 0.999, temperature: float = 0.2):
        super().__init__()
        if queue_size < 1 or dim < 1:
            raise ValueError(f"queue_size and dim must be >= 1, got {queue_size}, {dim}")
        if not 0 <= momentum < 1 or temperature <= 0:
            raise ValueError(f"need 0 <= momentum < 1 and temperature > 0, got {momentum}, {temperature}")
        self.momentum, self.temperature = float(momentum), float(temperature)
        width = encoder.width
        self.encoder = encoder  # the query radiograph transformer: what is exported
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))
        self.key_encoder = copy.deepcopy(self.encoder)  # starts equal to the query encoder
        self.key_head = copy.deepcopy(self.head)
        for p in self.key_parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))  # (K, dim) unit rows
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next row to overwrite
        self.key_encoder.eval()
        self.key_head.eval()

    @classmethod
    def from_config(cls, m: ModelConfig, **kw) -> "MoCo":
        return cls(RadiographTransformer.from_config(m), **kw)

    @property
    def queue_size(self) -> int:
        return self.queue.shape[0]

    def query_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.head.parameters()]

    def key_parameters(self) -> list[nn.Parameter]:
        return [*self.key_encoder.parameters(), *self.key_head.parameters()]

    def train(self, mode: bool = True) -> "MoCo":
        super().train(mode)
        self.key_encoder.eval()  # no stochastic depth in the keys (no BatchNorm to keep in train mode)
        self.key_head.eval()
        return self

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, dim) L2-normalised projections of the aggregation embedding."""
        agg, _ = self.encoder(x)  # (B, D)
        return F.normalize(self.head(agg).float(), dim=1)  # (B, dim)

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, dim) L2-normalised, from the momentum encoder, no gradient."""
        agg, _ = self.key_encoder(x)  # (B, D)
        return F.normalize(self.key_head(agg).float(), dim=1)  # (B, dim)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """k <- m k + (1 - m) q for every parameter of the key encoder and head (after the optimiser step)."""
        k, q = self.key_parameters(), self.query_parameters()
        torch._foreach_mul_(k, self.momentum)
        torch._foreach_add_(k, q, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (B, dim) over the oldest rows, wrapping around the end of the queue."""
        keys = keys.detach().to(self.queue.dtype)
        n, K = keys.shape[0], self.queue_size
        if n > K:  # only the last K keys would survive
            keys, n = keys[-K:], K
        rows = (self.queue_ptr + torch.arange(n, device=self.queue.device)) % K  # (n,)
        self.queue[rows] = keys
        self.queue_ptr.copy_((self.queue_ptr + n) % K)

    def forward(self, x_q: torch.Tensor, x_k: torch.Tensor, enqueue: bool = True) -> MoCoOutput:
        """Two views (B, 1, H, W) of the same B radiographs -> InfoNCE against the queue; pushes the keys."""
        q = self.query(x_q)  # (B, dim)
        k = self.key(x_k)  # (B, dim)
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        l_neg = q @ self.queue.clone().t()  # (B, K) against the queue before this batch's keys
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature  # (B, 1 + K)
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # (B,) the positive is column 0
        loss = F.cross_entropy(logits, labels)
        if enqueue:
            self.enqueue(k)
        return MoCoOutput(loss, logits, q, k)


# -- the run -----------------------------------------------------------------------------------


def _normalise(obj: Any) -> Any:
    """Tuples -> lists etc., so settings from a checkpoint compare equal to fresh ones."""
    return json.loads(json.dumps(obj))


def _diff(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key} ({vb!r} there, {va!r} now)")
    return out


def build_optimizer(model: MoCo, lr: float, momentum: float = 0.9, weight_decay: float = 1e-4,
                    device: torch.device | str = "cpu", optimizer: str = "sgd") -> torch.optim.Optimizer:
    """The optimiser over the query encoder and head (the key encoder has no gradient): two groups, weight decay
    only on parameters of two or more dimensions (not on LayerNorm weights and biases), as REFERS. ``optimizer``:
    ``"sgd"`` (momentum ``momentum``; the paper's recipe) or ``"adamw"`` (betas ``(momentum, 0.999)``, decoupled
    weight decay; what REFERS's course profiles pre-train with, so that the baseline gets the same optimiser)."""
    if optimizer not in MOCO_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {MOCO_OPTIMIZERS}, got {optimizer!r}")
    params = [p for p in model.query_parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if takes_weight_decay(p)], "weight_decay": weight_decay, "name": "decay"},
              {"params": [p for p in params if not takes_weight_decay(p)], "weight_decay": 0.0, "name": "no_decay"}]
    cuda = torch.device(device).type == "cuda"
    if optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999), **({"fused": True} if cuda else {}))
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, **({"fused": True} if cuda else {"foreach": True}))


class MoCoPretrainer(RunFiles):
    """One MoCo run in ``out_dir``; :func:`pretrain_moco` is the usual entry point.

    ``settings`` (JSON-able) is what decides the result: ``last.pt`` written under other settings is
    refused. The effective batch size and queue size may be clamped for small data.
    """

    def __init__(self, cfg: Config, data: SourceRadiographs, out_dir: str | Path, *, steps: int, batch_size: int,
                 lr: float = 3e-3, queue_size: int = 4096, momentum: float = 0.999, temperature: float = 0.2,
                 seed: int = 0, device: str = "auto", precision: str = "auto", warmup_steps: int | None = None,
                 hflip_prob: float = 0.5, progress: bool = True, settings: Mapping | None = None,
                 optimizer: str = "sgd"):
        if steps < 1 or batch_size < 1 or lr <= 0:
            raise ValueError(f"need steps >= 1, batch_size >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
        if len(data) < 2:
            raise ValueError(f"{data!r}: need at least 2 radiographs")
        if not 0 <= hflip_prob <= 1:
            raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
        self.cfg, self.data, self.out_dir = cfg, data, Path(out_dir)
        self.steps, self.progress = int(steps), progress
        self.batch_size = min(batch_size, len(data))
        if self.batch_size < batch_size:
            warnings.warn(f"batch_size={batch_size} exceeds the {len(data)} radiographs; using {self.batch_size}")
        self.queue_size = max(1, min(queue_size, len(data) - self.batch_size))  # no more than the other images
        self.steps_per_epoch = len(data) // self.batch_size
        self.warmup_steps = (round(steps * cfg.train.warmup_steps / cfg.train.max_steps) if warmup_steps is None
                             else int(warmup_steps))
        if not 0 <= self.warmup_steps <= steps:
            raise ValueError(f"warmup_steps must be in [0, steps={steps}], got {self.warmup_steps}")
        self.seed, self.hflip_prob = int(seed), float(hflip_prob)
        self.settings = _normalise(dict(settings or {}))
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)

        seed_everything(self.seed)  # the same initial weights for the same seed
        self.model = MoCo.from_config(cfg.model, queue_size=self.queue_size, momentum=momentum,
                                      temperature=temperature).to(self.device)
        self.augment = cfg.data.augmenter(cfg.model.image_size)
        self.aug_generator = torch.Generator(self.device).manual_seed(self.seed * 7919 + 17)
        t = cfg.train
        self.opt = build_optimizer(self.model, lr, t.momentum, t.weight_decay, self.device, optimizer)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: warmup_cosine(s, self.warmup_steps, self.steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)
        self.step = 0
        self._order: tuple[int, torch.Tensor] | None = None

    # -- data order and views
    def batch_indices(self, step: int) -> torch.Tensor:
        """The radiographs of step ``step``: a fixed function of (seed, step); epochs reshuffle, drop the rest."""
        epoch, j = divmod(step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.data), generator=g))
        return self._order[1][j * self.batch_size:(j + 1) * self.batch_size]  # (B,)

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, 1, S, S) on the device -> two independently augmented float views (B, 1, H, W) in [0, 1]."""
        out = []
        for _ in range(2):
            x = self.augment(images, train=True, generator=self.aug_generator)  # (B, 1, H, W), new draws each call
            flip = torch.rand(x.shape[0], generator=self.aug_generator, device=x.device) < self.hflip_prob  # (B,)
            out.append(torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x))  # (B, 1, H, W)
        return out[0], out[1]

    # -- one step
    def train_step(self) -> dict:
        self.model.train()
        images = self.data.batch(self.batch_indices(self.step).numpy())  # (B, 1, S, S) uint8
        images = images.to(self.device, non_blocking=self.device.type == "cuda")
        x_q, x_k = self.views(images)  # 2 x (B, 1, H, W)
        with self.precision.autocast(self.device):
            out = self.model(x_q, x_k)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"step {self.step + 1}: the MoCo loss is {out.loss.item()} "
                                     f"(precision={self.precision.name}); lower lr or use precision='fp32'")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.unscale_(self.opt)
        clip = self.cfg.train.grad_clip if self.cfg.train.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.query_parameters(), clip))
        self.scaler.step(self.opt)  # skipped by the scaler when fp16 gradients overflowed
        self.scaler.update()
        lr = self.opt.param_groups[0]["lr"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.sched.step()
        self.model.momentum_update()  # keys of the next step come from m k + (1 - m) q_new
        self.step += 1
        acc = (out.logits.argmax(dim=1) == 0).float().mean()
        return {"step": self.step, "loss": out.loss.item(), "lr": lr, "pos_top1": acc.item(), "grad_norm": grad_norm}

    # -- checkpoints
    def state(self) -> dict:
        rng = rng_state()
        rng["augment"] = self.aug_generator.get_state()
        return {"format": MOCO_TRAIN_FORMAT, "method": METHOD, "settings": self.settings,
                "config": self.cfg.to_dict(), "model": self.model.state_dict(),  # includes queue and queue_ptr
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng, "step": self.step}

    def save(self) -> None:
        save_checkpoint(self.state(), self.last_path)

    def resume(self) -> None:
        ckpt = load_checkpoint(self.last_path, MOCO_TRAIN_FORMAT)
        diff = _diff(self.settings, _normalise(ckpt.get("settings", {})))
        if diff:
            raise CheckpointError(f"{self.last_path}: was written by a MoCo run with other settings (differs in: "
                                  f"{'; '.join(diff)}); use another out_dir or the same settings")
        load_state_dict_strict(self.model, ckpt["model"], str(self.last_path))
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        try:
            self.aug_generator.set_state(ckpt["rng"]["augment"])
        except RuntimeError:  # written on another device type: augmentation draws anew
            warnings.warn(f"{self.last_path}: augmentation generator from another device; drawing anew")
        self.step = int(ckpt["step"])
        truncate_metrics(self.metrics_path, self.step)  # drop lines after the checkpoint: they will be redone

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    # -- the loop
    def fit(self, stop_after: int | None = None) -> bool:
        """Train (resuming ``last.pt``) to ``steps``; True when finished. ``stop_after``: return after that many
        steps of this call, with ``last.pt`` written, as if killed there (False)."""
        t = self.cfg.train
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.last_path.exists():
            self.resume()
        elif self.metrics_path.exists():
            self.metrics_path.unlink()  # a fresh run starts a fresh log
        atomic_write(self.out_dir / "settings.json", json.dumps(self.settings, indent=2) + "\n")
        start = self.step
        bar = tqdm(total=self.steps, initial=self.step, desc="MoCo pre-training", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        try:
            tick = time.time()
            while self.step < self.steps:
                stats = self.train_step()
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == self.steps:
                    now = time.time()
                    self.log({**stats, "sec_per_step": (now - tick) / max(1, t.log_every)})
                    bar.set_postfix(loss=f"{stats['loss']:.3f}")
                    tick = now
                if self.step % t.ckpt_every == 0 or self.step == self.steps:
                    self.save()
                if stop_after is not None and self.step - start >= stop_after and self.step < self.steps:
                    self.save()
                    return False
        except KeyboardInterrupt:
            self.save()  # an interrupted run loses nothing
            raise
        finally:
            bar.close()
        return True

    def export(self, path: Path) -> Path:
        """The query radiograph transformer as an image-encoder file (``load_image_encoder`` reads it)."""
        sd = {k: v.detach().cpu().clone() for k, v in self.model.encoder.state_dict().items()}
        return save_image_encoder(path, self.cfg.to_dict(), sd, self.steps, method=METHOD, settings=self.settings,
                                  effective={"batch_size": self.batch_size, "queue_size": self.queue_size,
                                             "warmup_steps": self.warmup_steps, "precision": self.precision.name})


def pretrain_moco(model_cfg_profile: str, source_root, out_dir, *, steps: int, batch_size: int, lr: float = 3e-3,
                  queue_size: int = 4096, momentum: float = 0.999, temperature: float = 0.2, seed: int = 0,
                  device: str = "auto", precision: str = "auto", progress: bool = True,
                  config_overrides: dict | None = None, split: str | None = "train",
                  warmup_steps: int | None = None, hflip_prob: float = 0.5,
                  stop_after: int | None = None, renders: int | None = None, optimizer: str = "sgd") -> Path:
    """MoCo v2-style pre-training of the radiograph transformer of ``get_config(model_cfg_profile,
    config_overrides)`` on the ``split`` radiographs of the source domain in ``source_root``.

    Returns ``out_dir/encoder.pt`` (``ENCODER_FORMAT``, ``"method": "moco_v2"``). If it already exists
    for the same settings it is returned without training; under other settings it is an error.
    ``last.pt`` of an earlier call with the same settings is resumed; with other settings, refused.
    ``stop_after``: return ``out_dir/last.pt`` after that many steps of this call, as if killed (tests).
    The model config's ``data`` section gives the augmentation, its ``train`` section SGD's momentum,
    the weight decay, gradient clipping, ``log_every`` and ``ckpt_every``. ``renders``: the films of how many
    renders of each study (None: the config's ``data.renders``), as REFERS is given them. ``optimizer``: ``"sgd"``
    (MoCo v2's and the paper's) or ``"adamw"`` (:func:`build_optimizer`; the experiment grid gives it where REFERS
    pre-trains with AdamW, at REFERS's image-side learning rate).
    """
    if optimizer not in MOCO_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {MOCO_OPTIMIZERS}, got {optimizer!r}")
    cfg = get_config(model_cfg_profile, config_overrides)
    data = SourceRadiographs(source_root, split, renders=cfg.data.renders if renders is None else renders)
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    cfg_dict = cfg.to_dict()
    decisive_cfg = {s: {k: v for k, v in sec.items() if f"{s}.{k}" not in RESUMABLE_CHANGES}
                    for s, sec in cfg_dict.items() if isinstance(sec, dict)}
    settings = _normalise({
        "method": METHOD, "profile": model_cfg_profile, "config": decisive_cfg, "data": data.fingerprint,
        "steps": steps, "batch_size": batch_size, "lr": lr, "queue_size": queue_size, "momentum": momentum,
        "temperature": temperature, "seed": seed, "precision": resolve_precision(precision, dev).name,
        "warmup_steps": warmup_steps, "hflip_prob": hflip_prob,
        **({"optimizer": optimizer} if optimizer != "sgd" else {})})  # (runs of before the option: SGD)
    enc_path = out_dir / "encoder.pt"
    if enc_path.exists():
        old = load_checkpoint(enc_path, ENCODER_FORMAT)
        diff = _diff(settings, _normalise(old.get("settings", {})))
        if diff:
            raise CheckpointError(f"{enc_path}: exists, written under other settings (differs in: {'; '.join(diff)}); "
                                  f"use another out_dir")
        return enc_path
    from ..training.run_lock import claim_run_folder, run_lock
    claim_run_folder(out_dir, "moco", check_only=True)  # before anything is written: not another kind's folder
    with run_lock(out_dir, log=None, wait=False):
        claim_run_folder(out_dir, "moco", settings)
        return _fit_moco(cfg, data, out_dir, enc_path, steps, batch_size, lr, queue_size, momentum, temperature, seed,
                         device, precision, warmup_steps, hflip_prob, progress, settings, stop_after, optimizer)


def _fit_moco(cfg, data, out_dir, enc_path, steps, batch_size, lr, queue_size, momentum, temperature, seed, device,
              precision, warmup_steps, hflip_prob, progress, settings, stop_after, optimizer) -> Path:
    trainer = MoCoPretrainer(cfg, data, out_dir, steps=steps, batch_size=batch_size, lr=lr, queue_size=queue_size,
                             momentum=momentum, temperature=temperature, seed=seed, device=device,
                             precision=precision, warmup_steps=warmup_steps, hflip_prob=hflip_prob,
                             progress=progress, settings=settings, optimizer=optimizer)
    if not trainer.fit(stop_after=stop_after):
        return trainer.last_path
    return trainer.export(enc_path)
