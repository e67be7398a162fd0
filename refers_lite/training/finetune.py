"""Fine-tuning on a labelled target domain (Methods 4.2, "Training and testing methodologies").

The paper fine-tunes the pre-trained radiograph transformer with a linear head on its aggregation
embedding, on each target domain at 1 %, 10 % and 100 % of the training labels:

* SGD, momentum 0.9, initial learning rate 3e-3 for every transformer (REFERS and the transformer
  baselines); Adam with 1e-4 for ResNets; the pre-training schedule (linear warm-up, then cosine
  decay); batch 128;
* augmentation as in pre-training: resize to 256, random crop 224, rotation of up to 10 degrees,
  brightness and contrast, horizontal flip (labels do not depend on the side);
* multi-label binary cross-entropy (NIH ChestX-ray, VinBigData), one binary output (Shenzhen, the
  COVID-19 tasks), softmax cross-entropy for a multi-class domain;
* per-class ROC-AUC; each experiment repeated 3 times.

The paper does not say how long it fine-tunes; we train ``epochs`` epochs but at least
``min_steps`` steps (at 1 % of the labels an epoch is a step or two), evaluate the validation AUC
after every epoch, keep the checkpoint with the best validation AUC and report the test AUC of
that checkpoint. The test split is never used to choose anything.

``finetune(...)`` is one run (one method, dataset, ratio, seed) in its own folder: ``config.json``,
``metrics.jsonl``, ``best.pt`` (the classifier, its classes and config) and ``result.json``
(written last and atomically: a folder with ``result.json`` holds a finished run).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from ..config import AugmentConfig, ConfigError, require, from_dict, deep_update, get_config, parse_overrides
from ..data.loading.domain_dataset import DomainImages
from ..files import atomic_write, sha256_file
from ..models.classifier import HEAD_NORMS, RadiographClassifier
from ..evaluation.metrics import mean_auc, per_class_auc
from .runtime import resolve_device, resolve_precision, seed_everything, takes_weight_decay, warmup_cosine

FINETUNE_FORMAT = "refers_lite.finetune.v1"
OPTIMIZERS = ("sgd", "adam", "adamw")  # adamw: decoupled weight decay, betas (momentum, 0.999)
HEAD_INITS = ("random", "probe")


@dataclass
class FinetuneConfig(AugmentConfig):  # the augmentation settings come first
    profile: str = "paper"
    optimizer: str = "sgd"  # paper: SGD for transformers, "adam" (lr 1e-4) for ResNets
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4  # not on LayerNorm and biases, as in pre-training
    batch_size: int = 128
    epochs: int = 20  # the paper does not say; at least min_steps steps
    min_steps: int = 300
    max_steps: int = 0  # 0: no cap; else at most this many steps (CPU profiles: the 100 % columns)
    warmup_fraction: float = 0.05
    grad_clip: float = 1.0
    precision: str = "auto"
    # the precision of evaluation and of the LP-FT probe's features: "train" (the training precision above) or
    # "fp32" (the frozen-encoder linear probe's: under bf16 the aggregation embeddings keep 8 bits, and features
    # that vary a little around a large common part lose what tells images apart)
    eval_precision: str = "train"
    device: str = "auto"
    num_workers: int = 0
    eval_batch_size: int = 256
    # "batchnorm": standardise the aggregation embedding before the linear head (BatchNorm without affine
    # parameters, as MAE's linear probe does); "none": the paper's plain linear layer
    head_norm: str = "none"
    encoder_lr_scale: float = 1.0  # the encoder's learning rate is lr x this (the head's is lr)
    # "random": the paper's freshly initialised head; "probe": LP-FT (Kumar et al. 2022), the head starts as the
    # linear probe of the frozen encoder (logistic regression, C chosen on validation), then everything is
    # fine-tuned; the probe is evaluated as step 0, so the kept checkpoint is never below it on validation. With
    # head_norm="batchnorm" the probe's standardisation goes into the norm's running statistics and its weights
    # on standardised features into the head
    head_init: str = "random"
    # True: the encoder's BatchNorm layers (the convolutional stem's, a ResNet's) keep their running statistics
    # while fine-tuning (train mode normalises by the batch instead), so that an LP-FT head sees the features its
    # probe was fit on. Measured at demo (book/demo_diagnosis.md, session 8): it fixes the first training loss of
    # a from-scratch encoder's probe head on the NIH-like task (374 with batch statistics, 0.86 kept), but the
    # test AUCs of a REFERS encoder moved by no more than the seeds' spread, and its validation AUCs were lower
    # at 1 %; so no profile turns it on. The paper's radiograph transformer has no BatchNorm: no effect there.
    freeze_batchnorm: bool = False

    def validate(self) -> None:
        require(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        require(self.lr > 0 and self.batch_size >= 1 and self.epochs >= 1 and self.min_steps >= 1,
               "lr, batch_size, epochs and min_steps must be positive")
        require(self.max_steps == 0 or self.max_steps >= self.min_steps, "max_steps must be 0 (no cap) or >= min_steps")
        require(0 <= self.warmup_fraction < 1, "warmup_fraction must be in [0, 1)")
        self.check_augment()
        require(self.head_norm in HEAD_NORMS, f"head_norm must be one of {HEAD_NORMS}, got {self.head_norm!r}")
        require(self.head_init in HEAD_INITS, f"head_init must be one of {HEAD_INITS}, got {self.head_init!r}")
        require(self.eval_precision in ("train", "fp32"),
                f"eval_precision must be 'train' or 'fp32', got {self.eval_precision!r}")
        require(0 <= self.encoder_lr_scale <= 1, f"encoder_lr_scale must be in [0, 1], got {self.encoder_lr_scale}")
        require(self.precision in ("auto", "fp32", "bf16", "fp16"), f"precision {self.precision!r} is not one of "
               f"auto, fp32, bf16, fp16")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


FINETUNE_PROFILES: dict[str, dict] = {
    "paper": {},
    # LP-FT (the head starts as the frozen encoder's linear probe); the budget grows with
    # the labelled set (5 epochs, at least 60 steps, at most 250: the 100 % columns get 2.5 epochs instead of 5, so
    # that `make book` fits the hour), so Figure 2's curves can rise with the label ratio; evaluation (and the
    # probe's features) in fp32: in bf16 the step-0 probe tested 0.06 and 0.03 below the fp32 probe of the same
    # encoder on the Shenzhen-like and COVID-like task 2 domains (chapter 08; book/demo_diagnosis.md)
    "demo": dict(batch_size=32, epochs=5, min_steps=60, max_steps=250, eval_batch_size=128, head_init="probe",
                 eval_precision="fp32"),
    "gpu": dict(batch_size=64, epochs=10, min_steps=100, eval_batch_size=256, head_init="probe", eval_precision="fp32",
                num_workers=4),
    "smoke": dict(batch_size=8, epochs=1, min_steps=3, eval_batch_size=32, precision="fp32", lr=1e-2),
}


def get_finetune_config(profile: str = "smoke", overrides: Mapping[str, Any] | Sequence[str] | None = None
                        ) -> FinetuneConfig:
    """A named fine-tuning profile plus overrides (``{"lr": 1e-4}`` or ``["lr=1e-4"]``), validated."""
    if profile not in FINETUNE_PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(FINETUNE_PROFILES)}")
    d = FinetuneConfig(profile=profile).to_dict()
    deep_update(d, dict(FINETUNE_PROFILES[profile]))
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = {k: v for sec in parse_overrides([f"ft.{o}" for o in overrides]).values() for k, v in sec.items()}
        deep_update(d, dict(overrides))
    cfg = from_dict(FinetuneConfig, d, "")
    cfg.validate()
    return cfg


# -- the model ---------------------------------------------------------------------------------


def build_encoder(encoder: str | Path, profile: str = "smoke", scratch_model: Mapping[str, Any] | None = None
                  ) -> nn.Module:
    """``"scratch"``: a randomly initialised radiograph transformer of the pre-training profile's size, or of
    ``scratch_model`` (overrides of the profile's ``model`` section: the architecture a pre-training it is
    compared with used, e.g. its stem); otherwise an exported image encoder file (``refers-lite export``),
    loaded strictly."""
    if str(encoder) == "scratch":
        from ..models.radiograph_transformer import RadiographTransformer
        return RadiographTransformer.from_config(get_config(profile, {"model": dict(scratch_model or {})}).model)
    from .checkpoint import load_image_encoder
    return load_image_encoder(encoder)


def _loss(task: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if task == "multiclass":
        return F.cross_entropy(logits, labels.argmax(1))
    return F.binary_cross_entropy_with_logits(logits, labels)  # multilabel and binary (one column)


def _probabilities(task: str, logits: torch.Tensor) -> torch.Tensor:
    return logits.float().softmax(-1) if task == "multiclass" else logits.float().sigmoid()


# -- one run -----------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    out_dir: Path
    test_auc: dict[str, float]
    test_mean_auc: float
    val_mean_auc: float
    best_step: int
    steps: int
    seconds: float
    reused: bool = False

    @classmethod
    def read(cls, path: Path) -> "FinetuneResult":
        r = json.loads(path.read_text())
        return cls(path.parent, r["test_auc"], r["test_mean_auc"], r["val_mean_auc"], r["best_step"], r["steps"],
                   r["seconds"], reused=True)


def _param_groups(model: nn.Module, weight_decay: float, lr: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """{encoder, head} x {decay, no decay}; the encoder's groups at lr x encoder_lr_scale (0: frozen)."""
    enc = getattr(model, "encoder", None)
    enc_ids = {id(p) for p in enc.parameters()} if enc is not None else set()
    groups = []
    for part, scale in (("encoder", encoder_lr_scale), ("head", 1.0)):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in enc_ids) == (part == "encoder")]
        if scale == 0:
            for p in params:
                p.requires_grad_(False)
            continue
        groups += [{"params": [p for p in params if takes_weight_decay(p)], "weight_decay": weight_decay,
                    "lr": lr * scale},
                   {"params": [p for p in params if not takes_weight_decay(p)], "weight_decay": 0.0, "lr": lr * scale}]
    return [g for g in groups if g["params"]]


class Finetuner:
    """Fine-tune ``model`` (images (B, 1, H, W) -> logits) on one domain split at one label ratio."""

    def __init__(self, cfg: FinetuneConfig, model: nn.Module, train_set, val_set, test_set, seed: int,
                 out_dir: str | Path, progress: bool = True, run_info: dict | None = None):
        """Datasets: items ``{"image": (1, S, S) uint8, "labels": (K,) float}``; each has ``task``, ``classes``
        and ``name`` (as :class:`DomainImages` with ``uint8=True``)."""
        self.cfg, self.out_dir, self.progress = cfg, Path(out_dir), progress
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        if len(self.train_set) == 0:
            raise ValueError(f"{self.train_set!r}: no training images")
        self.task, self.classes = self.train_set.task, self.train_set.classes
        self.run_info = {"name": self.train_set.name, "ratio": 1.0, "seed": seed, **(run_info or {})}
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.seed = seed
        self.model = model.to(self.device)
        n_out = len(self.classes)
        if getattr(self.model, "head", None) is not None and self.model.head.out_features != n_out:
            raise ValueError(f"the model has {self.model.head.out_features} outputs, the domain "
                             f"{self.train_set.name!r} has {n_out} classes")
        size = getattr(self.model, "image_size", 224)
        self.augment = cfg.augmenter(size)
        self.batch_size = min(cfg.batch_size, len(self.train_set))
        self.steps_per_epoch = max(1, len(self.train_set) // self.batch_size)
        self.total_steps = max(cfg.min_steps, cfg.epochs * self.steps_per_epoch)
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.eval_every = self.steps_per_epoch if self.steps_per_epoch * cfg.epochs == self.total_steps \
            else max(1, self.total_steps // cfg.epochs)  # short or capped epochs: evaluate `epochs` times in all
        params = _param_groups(self.model, cfg.weight_decay, cfg.lr, cfg.encoder_lr_scale)
        fused = {"fused": True} if self.device.type == "cuda" else {}
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, **fused)
        elif cfg.optimizer == "adamw":  # as REFERS's course pre-training (training/pretrain.py)
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.momentum, 0.999), **fused)
        else:
            self.opt = torch.optim.Adam(params, lr=cfg.lr, **fused)
        warmup = int(cfg.warmup_fraction * self.total_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: warmup_cosine(s, warmup, self.total_steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)
        self.gen = torch.Generator(self.device).manual_seed(seed * 7919 + 3)

    @classmethod
    def for_domain(cls, cfg: FinetuneConfig, model: nn.Module, domain: str | Path, ratio: float, seed: int,
                   out_dir: str | Path, progress: bool = True, run_info: dict | None = None) -> "Finetuner":
        """On a target domain folder: its (ratio, seed) training subset, its validation and test splits."""
        sets = (DomainImages(domain, "train", ratio=ratio, seed=seed, uint8=True),
                DomainImages(domain, "validation", uint8=True), DomainImages(domain, "test", uint8=True))
        return cls(cfg, model, *sets, seed, out_dir, progress,
                   {"domain": str(domain), "ratio": ratio, **(run_info or {})})

    def _prepare(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)  # (B, 1, S, S) uint8
        x = self.augment(images, train=train and self.cfg.augment, generator=self.gen)  # (B, 1, H, W) in [0, 1]
        if train and self.cfg.augment and self.cfg.hflip_prob > 0:
            flip = torch.rand(x.shape[0], device=x.device, generator=self.gen) < self.cfg.hflip_prob  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x

    def _eval_autocast(self):
        """The autocast context of evaluation: the training precision's, or none (fp32)."""
        if self.cfg.eval_precision == "fp32":
            return contextlib.nullcontext()
        return self.precision.autocast(self.device)

    def train_mode(self) -> None:
        """The model in training mode; with ``freeze_batchnorm`` its BatchNorm layers stay in evaluation mode."""
        self.model.train()
        if self.cfg.freeze_batchnorm:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    @torch.no_grad()
    def predict(self, dataset: DomainImages) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, K), labels (N, K)) on a whole split, no augmentation."""
        self.model.eval()
        loader = DataLoader(dataset, batch_size=self.cfg.eval_batch_size, shuffle=False,
                            num_workers=self.cfg.num_workers, pin_memory=self.device.type == "cuda")
        probs, labels = [], []
        for batch in loader:
            with self._eval_autocast():
                logits = self.model(self._prepare(batch["image"], train=False))
            probs.append(_probabilities(self.task, logits).cpu())
            labels.append(batch["labels"])
        return torch.cat(probs).numpy(), torch.cat(labels).numpy()

    @torch.no_grad()
    def init_head_from_probe(self) -> float:
        """LP-FT's first stage: fit the linear probe on the frozen encoder's features of the training subset (C
        chosen on the validation split) and copy it into the head (with a batch-norm head: its standardisation into
        the norm's running statistics). Returns the probe's validation mean AUC."""
        from ..evaluation.linear_probe import extract_features, fit_probe
        enc, head, norm = self.model.encoder, self.model.head, self.model.norm
        standardised = isinstance(norm, nn.BatchNorm1d)  # the norm standardises: the probe's own weights
        with self._eval_autocast():  # the features the model will be evaluated on
            X = extract_features(enc, self.train_set, self.augment, self.cfg.eval_batch_size)
            Xv = extract_features(enc, self.val_set, self.augment, self.cfg.eval_batch_size)
        y, yv = self.train_set.labels_matrix(), self.val_set.labels_matrix()
        probe, val_auc = fit_probe(X, y, Xv, yv)
        w = torch.zeros_like(head.weight)  # (K, D)
        b = torch.zeros_like(head.bias)  # (K,)
        for k, clf in enumerate(probe.classifiers):
            if isinstance(clf, float):  # one label value in the subset: a constant score
                p = min(max(clf, 1e-4), 1 - 1e-4)
                b[k] = math.log(p / (1 - p))
                continue
            if standardised:
                w[k] = torch.as_tensor(clf.coef_[0], dtype=w.dtype)
                b[k] = float(clf.intercept_[0])
                continue
            coef = torch.as_tensor(clf.coef_[0] / probe.scale, dtype=w.dtype)  # on raw features
            w[k] = coef
            b[k] = float(clf.intercept_[0]) - float(coef.double() @ torch.as_tensor(probe.mean))
        if standardised:  # evaluation mode computes (z - mean) / sqrt(var + eps)
            norm.running_mean.copy_(torch.as_tensor(probe.mean, dtype=norm.running_mean.dtype))
            var = torch.as_tensor(probe.scale, dtype=norm.running_var.dtype) ** 2 - norm.eps
            norm.running_var.copy_(var.clamp_min(0.0))
        head.weight.copy_(w)
        head.bias.copy_(b)
        return val_auc

    def evaluate(self, dataset: DomainImages) -> dict[str, float]:
        probs, labels = self.predict(dataset)
        return per_class_auc(labels, probs, self.classes)

    def _save_best(self, step: int) -> None:
        plain = json.loads(json.dumps({"finetune": self.cfg.to_dict(), "run": self.run_info}))  # what loads safely
        save_checkpoint({"format": FINETUNE_FORMAT, "model": self.model.state_dict(), "classes": list(self.classes),
                         "task": str(self.task), "step": int(step), **plain}, self.out_dir / "best.pt")

    def fit(self) -> FinetuneResult:
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out_dir / "config.json", json.dumps({"finetune": cfg.to_dict(), **self.run_info}, indent=2))
        log = open(self.out_dir / "metrics.jsonl", "w")
        seed_everything(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        loader = DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True, generator=g,
                            num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=cfg.num_workers > 0)
        best_auc, best_step, step, t0 = -math.inf, 0, 0, time.time()
        if cfg.head_init == "probe":  # LP-FT: the probe is step 0 and the first checkpoint
            probe_auc = self.init_head_from_probe()
            best_auc = mean_auc(self.evaluate(self.val_set))
            log.write(json.dumps({"step": 0, "val_mean_auc": best_auc, "probe_val_mean_auc": probe_auc}) + "\n")
            self._save_best(0)
        bar = tqdm(total=self.total_steps, desc=f"fine-tuning {self.run_info['name']} {self.run_info['ratio']:g}",
                   unit="step", disable=not self.progress, dynamic_ncols=True)
        try:
            while step < self.total_steps:
                for batch in loader:
                    self.train_mode()
                    x = self._prepare(batch["image"], train=True)
                    y = batch["labels"].to(self.device, non_blocking=True)
                    with self.precision.autocast(self.device):
                        logits = self.model(x)
                    loss = _loss(self.task, logits, y)
                    self.opt.zero_grad(set_to_none=True)
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.opt)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.scaler.step(self.opt)
                    self.scaler.update()
                    self.sched.step()
                    step += 1
                    bar.update(1)
                    rec = {"step": step, "loss": float(loss.detach()), "lr": self.opt.param_groups[0]["lr"]}
                    if step % self.eval_every == 0 or step == self.total_steps:
                        val = mean_auc(self.evaluate(self.val_set))
                        rec["val_mean_auc"] = val
                        bar.set_postfix(val_auc=f"{val:.3f}")
                        if val > best_auc or not math.isfinite(best_auc):  # the first evaluation always counts
                            best_auc, best_step = val, step
                            self._save_best(step)
                    log.write(json.dumps(rec) + "\n")
                    if step >= self.total_steps:
                        break
        finally:
            bar.close()
            log.close()
        self.model.load_state_dict(load_finetune_checkpoint(self.out_dir / "best.pt")["model"])
        test = self.evaluate(self.test_set)
        result = {"test_auc": test, "test_mean_auc": mean_auc(test), "val_mean_auc": best_auc, "best_step": best_step,
                  "steps": step, "seconds": round(time.time() - t0, 2), "n_train": len(self.train_set),
                  "n_val": len(self.val_set), "n_test": len(self.test_set), "device": str(self.device),
                  **self.run_info}
        atomic_write(self.out_dir / "result.json", json.dumps(result, indent=2) + "\n")
        return FinetuneResult(self.out_dir, test, result["test_mean_auc"], best_auc, best_step, step, result["seconds"])


def load_finetune_checkpoint(path: str | Path) -> dict:
    """A fine-tuning run's ``best.pt`` (weights on the CPU), read with the weights-only unpickler."""
    return load_checkpoint(path, FINETUNE_FORMAT)


def finetune(encoder: str | Path, domain: str | Path, ratio: float, seed: int, out_dir: str | Path,
             cfg: FinetuneConfig | None = None, profile: str = "smoke", progress: bool = True,
             reuse: bool = True, scratch_model: Mapping[str, Any] | None = None,
             overwrite: bool = False) -> FinetuneResult:
    """One fine-tuning run of ``encoder`` (``"scratch"`` or an exported encoder file) on a domain folder.
    ``scratch_model``: for ``"scratch"``, overrides of the profile's model section (see :func:`build_encoder`).

    With ``reuse``, a folder that already holds ``result.json`` of the same run is read, not re-run: the same
    settings, ratio and seed, the same domain *data* (:func:`~refers_lite.data.loading.domain_dataset.domain_digest`) and
    the same encoder *file contents* (its sha256), not merely the same paths. While another process writes
    ``out_dir`` this raises :class:`~refers_lite.training.run_lock.RunFolderBusy`. A folder holding another run's
    results (a fine-tuning of other settings, data or encoder; a pre-training) is refused
    (:class:`~refers_lite.training.run_lock.RunFolderOwned`) unless ``overwrite``."""
    from ..data.loading.domain_dataset import domain_digest
    from .run_lock import RunFolderOwned, claim_run_folder, run_lock
    cfg = cfg or get_finetune_config(profile)
    out_dir = Path(out_dir)
    info = {"encoder": str(encoder), "domain_sha256": domain_digest(domain)}
    if str(encoder) != "scratch":
        if not Path(encoder).is_file():
            raise FileNotFoundError(f"encoder file not found: {encoder} (an exported encoder.pt, or 'scratch')")
        info["encoder_sha256"] = encoder_sha256(encoder)
    if scratch_model:
        info["scratch_model"] = dict(scratch_model)
    done = out_dir / "result.json"
    if reuse and done.is_file():
        saved = json.loads((out_dir / "config.json").read_text()) if (out_dir / "config.json").is_file() else {}
        if saved.get("finetune") == cfg.to_dict() and all(saved.get(k) == v for k, v in info.items()) \
                and saved.get("scratch_model") == info.get("scratch_model") \
                and math.isclose(saved.get("ratio", -1), ratio) and saved.get("seed") == seed:
            return FinetuneResult.read(done)
    if not overwrite:
        claim_run_folder(out_dir, "fine-tuning", check_only=True)  # another kind's run.json
        theirs = [n for n in ("result.json", "last.pt", "summary.json", "encoder.pt") if (out_dir / n).is_file()]
        if theirs:
            raise RunFolderOwned(f"{out_dir}: holds another run's {', '.join(theirs)} (other settings, data or encoder"
                                 f" than this fine-tuning, or a pre-training); this run would replace them. Choose "
                                 f"another --out, or pass --overwrite to replace it")
    with run_lock(out_dir, log=None, wait=False):  # another process writing this folder: RunFolderBusy
        claim_run_folder(out_dir, "fine-tuning", {"finetune": cfg.to_dict(), **info, "ratio": ratio, "seed": seed},
                         overwrite=overwrite)
        seed_everything(seed)  # the head's initialisation depends on the run's seed
        model = RadiographClassifier(build_encoder(encoder, cfg.profile, scratch_model), _num_classes(domain), cfg.head_norm)
        return Finetuner.for_domain(cfg, model, domain, ratio, seed, out_dir, progress=progress, run_info=info).fit()


def encoder_sha256(path: str | Path) -> str:
    """sha256 of an encoder file's bytes, read once per (file, inode, size, modification time) in a process: the
    grid fine-tunes one encoder in every cell of its method, and a cell's reuse check needs its digest (a file
    saved again is a new inode: checkpoints are renamed over the old file)."""
    path = Path(path)
    st = path.stat()
    return _file_sha256(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, inode: int, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def _num_classes(domain: str | Path) -> int:
    from ..data.loading.domain_dataset import read_domain
    return len(read_domain(domain)["classes"])
