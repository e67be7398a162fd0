"""Cross-supervised pre-training (Methods 4.2, "Training and testing methodologies").

The paper's recipe: SGD (momentum 0.9, weight decay 1e-4 except on LayerNorm and biases),
lr 3e-3 for the radiograph transformer and the view fusion, 3e-4 for the report transformer and
BERT, linear warm-up then cosine decay, batch counted in studies, gradient clipping; validation
loss after every epoch, keeping the checkpoint with the lowest validation loss and the last one.

Mixed precision through ``torch.autocast``: bf16 (CUDA when supported, and CPU) or fp16 with a
``GradScaler``; ``precision="fp32"`` switches it off.

Exact resume: ``last.pt`` holds model, optimiser, scheduler, scaler, every RNG state and the
sampler position; batches depend only on their position in the run (see ``data/studies.py``),
so a run killed and resumed ends with the same weights as one that was never interrupted.

Several processes (``torchrun``, see ``training/distributed.py``): the model is wrapped in DDP, each rank
takes ``train.batch_size / W`` studies of every global batch, both losses are computed over the
global batch (global negatives), rank 0 alone logs and writes checkpoints, and a checkpoint holds
every rank's RNG state, so a DDP run resumes exactly too.

The hot loop: uint8 studies (from the memory-mapped image cache) are copied to the device
(pinned memory, ``non_blocking``) and augmented there as whole batches (``data/gpu_augment.py``);
``train.compile`` compiles the model, ``train.grad_checkpointing`` trades compute for memory,
and the optimiser step is fused on CUDA (``foreach`` elsewhere).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .checkpoint import TRAIN_FORMAT, CheckpointError, load_checkpoint, load_state_dict_strict, save_checkpoint
from ..files import atomic_write
from ..config import Config, ConfigError
from ..data.loading.studies import MultiViewStudies, ResumableSampler, StudyCollator
from .distributed import barrier, gather_objects, is_main_process, mean_over_ranks, rank, world_size
from ..models.refers import REFERS
from .run_lock import RunFiles
from ..viz.plots import truncate_metrics
from .runtime import (RESUMABLE_CHANGES, resolve_device, resolve_precision, rng_state, seed_everything,
                      set_rng_state, takes_weight_decay, warmup_cosine)

__all__ = ["Pretrainer", "pretrain", "PretrainResult", "TrainingDiverged"]


# -- errors ------------------------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """A pre-training run that reached its last step without one finite validation loss."""


# -- optimiser and schedule --------------------------------------------------------------------


def param_groups(model: REFERS, cfg: Config) -> list[dict]:
    """Four groups: {vision, text} x {decay, no decay}.

    Vision (lr_vision): radiograph transformer and view fusion. Text (lr_text): report transformer
    and the BERT text encoder with its projection. No weight decay on parameters with fewer than
    two dimensions: LayerNorm weights and every bias (the nanoGPT rule). Frozen parameters are left out.
    """
    t = cfg.train
    vision = {id(p) for mod in (model.encoder, model.fusion) for p in mod.parameters()}
    groups = {(kind, decay): [] for kind in ("vision", "text") for decay in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        groups[("vision" if id(p) in vision else "text", takes_weight_decay(p))].append(p)
    out = []
    for (kind, decay), params in groups.items():
        if params:
            out.append({"params": params, "lr": t.lr_vision if kind == "vision" else t.lr_text,
                        "weight_decay": t.weight_decay if decay else 0.0, "name": f"{kind}_{'decay' if decay else 'no_decay'}"})
    return out


def build_optimizer(model: REFERS, cfg: Config, device: torch.device):
    t = cfg.train
    kw = {"fused": True} if device.type == "cuda" else {"foreach": True}  # one kernel for all parameters
    if t.optimizer == "sgd":  # the paper
        opt = torch.optim.SGD(param_groups(model, cfg), momentum=t.momentum, **kw)
    else:
        opt = torch.optim.AdamW(param_groups(model, cfg), betas=(t.momentum, 0.999), **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, t.warmup_steps, t.max_steps))
    return opt, sched


# -- the loop ----------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class PretrainResult:
    out_dir: Path
    step: int
    best_val_loss: float
    last_checkpoint: Path
    best_checkpoint: Path | None
    interrupted: bool = False


def to_device(batch: dict, device: torch.device) -> dict:
    nb = device.type == "cuda"  # with pinned memory the copy overlaps the previous step
    return {k: v.to(device, non_blocking=nb) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def model_inputs(batch: dict) -> dict:
    return {k: batch.get(k) for k in ("images", "view_mask", "report_ids", "text_ids", "text_mask")}


class Pretrainer(RunFiles):
    """One pre-training run in ``out_dir``: train, validate, checkpoint, resume."""

    def __init__(self, cfg: Config, train_set: Dataset, val_set: Dataset, out_dir: str | Path,
                 text_tokenizer=None, model: REFERS | None = None, progress: bool = True):
        self.cfg, self.out_dir = cfg, Path(out_dir)
        t, m, W = cfg.train, cfg.model, world_size()
        if len(train_set) < 2 * W:
            raise ValueError(f"the training set has {len(train_set)} studies; need at least 2 per process")
        if len(val_set) < 1:
            raise ValueError("the validation set is empty")
        if t.batch_size % W:
            raise ValueError(f"train.batch_size={t.batch_size} (studies per step, all processes together) must be "
                             f"divisible by the {W} processes")
        self.device = resolve_device(t.device)
        self.precision = resolve_precision(t.precision, self.device)
        seed_everything(t.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.module = (model or REFERS.from_config(cfg)).to(self.device)  # the plain model: state, validation
        self.module.set_grad_checkpointing(t.grad_checkpointing)
        self.model: nn.Module = self.module  # what the training step calls
        if W > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            seed_everything(t.seed + 1_000_003 * rank())  # dropout differs across ranks
        if t.compile:
            self.model = torch.compile(self.model)
        if cfg.loss.use_consistency and text_tokenizer is None:
            from ..models.text_encoder import load_text_tokenizer
            text_tokenizer = load_text_tokenizer(m.text_encoder)
        self.collate = StudyCollator.from_config(cfg, text_tokenizer)
        report_tok = getattr(train_set, "report_tokenizer", None)
        self.train_set = MultiViewStudies(train_set, m.num_views, seed=t.seed, name="training set",
                                          hflip_prob=cfg.data.hflip_prob, report_tokenizer=report_tok,
                                          max_report_len=m.max_report_len)
        self.val_set = MultiViewStudies(val_set, m.num_views, seed=t.seed + 1, name="validation set")
        self.augment = cfg.data.augmenter(m.image_size)
        self.aug_generator = torch.Generator(self.device).manual_seed(t.seed * 7919 + 17 + rank())
        self.global_batch = min(t.batch_size, (len(train_set) // W) * W)
        self.batch_size = self.global_batch // W  # studies per process and step
        if self.global_batch < t.batch_size:
            warnings.warn(f"train.batch_size={t.batch_size} exceeds the {len(train_set)} training studies; "
                          f"using {self.global_batch}")
        self.sampler = ResumableSampler(len(train_set), seed=t.seed, rank=rank(), world_size=W)
        self.steps_per_epoch = len(train_set) // W // self.batch_size
        self.opt, self.sched = build_optimizer(self.module, cfg, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_scaler)
        self.progress = progress and is_main_process()
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_val = float("inf")
        self.nonfinite_streak = 0
        self.skipped_steps = 0

    # -- logging
    def log(self, record: dict) -> None:
        if is_main_process():
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    # -- checkpoints
    def state(self) -> dict:
        """The whole run; under DDP a collective (every rank's RNG state is gathered), call it on all ranks."""
        rng = rng_state()
        rng["augment"] = self.aug_generator.get_state()
        return {"format": TRAIN_FORMAT, "config": self.cfg.to_dict(), "model": self.module.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": gather_objects(rng), "world_size": world_size(),
                "step": self.step, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "best_val_loss": self.best_val,
                "skipped_steps": self.skipped_steps}

    def save(self, path: Path) -> None:
        state = self.state()  # on every rank: gathers the RNG states
        if is_main_process():
            save_checkpoint(state, path)
        barrier()  # nobody goes on (or reads it) before it is on disk

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, TRAIN_FORMAT)
        try:  # settings added to the config since the run was written take their defaults
            saved = Config.from_dict(ckpt["config"]).to_dict()
        except ConfigError as e:
            raise CheckpointError(f"{path}: its saved config is invalid: {e}") from e
        diff = sorted(f"{s}.{k}" for s, sec in self.cfg.to_dict().items() if isinstance(sec, dict)
                      for k in sec if saved.get(s, {}).get(k) != sec[k])
        diff = [k for k in diff if k not in RESUMABLE_CHANGES]
        if diff:
            raise CheckpointError(f"{path}: was written with a different config (differs in: {', '.join(diff)}); "
                                  f"use another --out folder or the same settings")
        load_state_dict_strict(self.module, ckpt["model"], str(path))
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
        if len(states) != world_size():
            warnings.warn(f"{path}: written by {len(states)} process(es), resumed by {world_size()}: the weights, "
                          f"optimiser and data order resume exactly, dropout and augmentation draw anew")
        mine = states[rank() % len(states)]
        set_rng_state(mine)
        if "augment" in mine:
            try:
                self.aug_generator.set_state(mine["augment"])
            except RuntimeError:  # saved on another device type: augmentation draws anew, as MoCo's resume says
                warnings.warn(f"{path}: augmentation generator from another device; drawing anew")
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        self.best_val, self.skipped_steps = ckpt["best_val_loss"], ckpt["skipped_steps"]
        self._truncate_metrics(self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines written after the checkpoint we resume from (they will be redone)."""
        if is_main_process():
            truncate_metrics(self.metrics_path, step)

    # -- one step
    def train_step(self, batch: dict) -> dict:
        t = self.cfg.train
        self.model.train()
        batch = self.prepare(to_device(batch, self.device), train=True)
        with self.precision.autocast(self.device):
            out = self.model(**model_inputs(batch), gather=world_size() > 1)
        loss = out.losses.total
        self.opt.zero_grad(set_to_none=True)
        stats = mean_over_ranks(out.losses.as_floats())  # the global batch's losses
        if not torch.isfinite(loss) and not self.scaler.is_enabled():
            stepped, grad_norm = False, float("nan")
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            params = [p for g in self.opt.param_groups for p in g["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else float("inf")))
            if self.scaler.is_enabled():
                scale_before = self.scaler.get_scale()
                self.scaler.step(self.opt)  # skipped internally when gradients are inf/NaN
                self.scaler.update()
                stepped = math.isfinite(grad_norm) and self.scaler.get_scale() >= scale_before
            elif math.isfinite(grad_norm):
                self.opt.step()
                stepped = True
            else:
                stepped = False
        with warnings.catch_warnings():  # a skipped step still advances the schedule: say nothing
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.sched.step()
        self.step += 1
        if stepped:
            self.nonfinite_streak = 0
        else:
            self.opt.zero_grad(set_to_none=True)
            self.nonfinite_streak += 1
            self.skipped_steps += 1
            if self.nonfinite_streak > t.max_nonfinite:
                raise NonFiniteLossError(
                    f"{self.nonfinite_streak} consecutive steps had a non-finite loss or gradient (last loss "
                    f"{stats['loss']}); precision={self.precision.name}. Lower the learning rates, check the "
                    f"inputs for NaN, or try train.precision=fp32.")
        stats.update(grad_norm=grad_norm, skipped=not stepped)
        if self.scaler.is_enabled():
            stats["loss_scale"] = self.scaler.get_scale()
        return stats

    def prepare(self, batch: dict, train: bool) -> dict:
        """Images on the device -> model input: uint8 films are cropped, rotated and jittered here, as a batch."""
        images = batch["images"]
        if images.dtype == torch.uint8 or images.shape[-1] != self.cfg.model.image_size:
            batch = dict(batch, images=self.augment(images, train=train and self.cfg.data.augment,
                                                    generator=self.aug_generator))
        return batch

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss on the whole validation set, in batches of the global batch size.

        Under DDP every rank computes it (on its plain model, no gathering): it needs no
        communication and gives the same number as a single process."""
        self.module.eval()
        loader = self._loader(self.val_set, ResumableSampler(len(self.val_set), shuffle=False), drop_last=False,
                              batch_size=min(self.global_batch, len(self.val_set)))
        totals: dict[str, float] = {}
        n = 0
        for batch in loader:
            if len(batch["study_id"]) < 2 and self.cfg.loss.use_consistency:
                continue  # a contrastive loss over one study is 0 and meaningless
            batch = self.prepare(to_device(batch, self.device), train=False)
            with self.precision.autocast(self.device):
                out = self.module(**model_inputs(batch))
            b = batch["images"].shape[0]
            for k, v in out.losses.as_floats().items():
                totals[k] = totals.get(k, 0.0) + v * b
            n += b
        if n == 0:
            raise ValueError("validation set too small: need at least 2 studies per batch")
        return {f"val_{k}": v / n for k, v in totals.items()}

    def _loader(self, dataset, sampler, drop_last: bool, batch_size: int | None = None,
                persistent: bool = False) -> DataLoader:
        t = self.cfg.train
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, sampler=sampler,
                          collate_fn=self.collate, num_workers=t.num_workers, drop_last=drop_last,
                          pin_memory=self.device.type == "cuda", persistent_workers=persistent and t.num_workers > 0,
                          prefetch_factor=4 if t.num_workers > 0 else None,
                          generator=torch.Generator().manual_seed(t.seed))  # never touches the global RNG

    def _end_of_validation(self, val: dict) -> None:
        self.log({"step": self.step, "epoch": self.epoch, **val})
        if val["val_loss"] < self.best_val:
            self.best_val = val["val_loss"]
            self.save(self.best_path)

    # -- the run
    def fit(self, resume: bool = True, stop_after: int | None = None,
            callback: Callable[["Pretrainer", dict], None] | None = None) -> PretrainResult:
        """Train to ``train.max_steps``. ``stop_after``: return after that many steps of *this* call
        (with ``last.pt`` written), as if the run had been killed there."""
        t = self.cfg.train
        refuse_to_replace(self.out_dir, resume)
        if is_main_process():
            run_folder(self.out_dir).mkdir(parents=True, exist_ok=True)
        if resume and self.last_path.exists():
            self.resume(self.last_path)  # before config.json: a rejected resume leaves the folder as it was
        elif self.metrics_path.exists() and is_main_process():
            self.metrics_path.unlink()  # a fresh run in an old folder starts a fresh log
        if is_main_process():
            self.cfg.save(self.out_dir / "config.json")
        if self.steps_per_epoch < 1:
            raise ValueError("fewer training studies than one batch")
        if self.step >= t.max_steps:  # resumed a run that had already finished: nothing to redo
            return self._finished()
        start_step, t0 = self.step, time.time()
        bar = tqdm(total=t.max_steps, initial=self.step, desc="pre-training", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        if self.progress:
            tqdm.write(f"pre-training on {self.device} in {self.precision.name} ({self.precision.reason})")
        interrupted = False
        validated_at = None  # the step of the last validation
        # One loader for the whole run: its workers persist across epochs; the sampler (iterated in
        # this process) is moved to each epoch's start before the loader is iterated again.
        loader = self._loader(self.train_set, self.sampler, drop_last=True, persistent=True)
        previous = sigterm_as_interrupt()  # `kill`, a scheduler's time limit: saved as Ctrl-C is
        try:
            while self.step < t.max_steps:
                self.sampler.set_epoch(self.epoch, self.batch_in_epoch * self.batch_size)
                tick = time.time()
                for batch in loader:
                    stats = self.train_step(batch)
                    self.batch_in_epoch += 1
                    bar.update(1)
                    now = time.time()
                    if self.step % t.log_every == 0 or self.step == t.max_steps:
                        lrs = {f"lr_{g['name'].split('_')[0]}": g["lr"] for g in self.opt.param_groups}
                        rec = {"step": self.step, "epoch": self.epoch, **stats, **lrs,
                               "sec_per_step": now - tick, "studies_per_sec": self.global_batch / max(now - tick, 1e-9)}
                        self.log(rec)
                        bar.set_postfix(loss=f"{stats['loss']:.3f}")
                        if callback:
                            callback(self, rec)
                    tick = now
                    if t.val_every and self.step % t.val_every == 0:
                        self._end_of_validation(self.validate())
                        validated_at = self.step
                    if self.step % t.ckpt_every == 0:
                        self.save(self.last_path)
                    if self.step >= t.max_steps:
                        break
                    if stop_after is not None and self.step - start_step >= stop_after:
                        self.save(self.last_path)
                        interrupted = True
                        return self._result(interrupted)
                if self.batch_in_epoch >= self.steps_per_epoch:  # epoch finished: validate (paper)
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if validated_at != self.step:  # not twice at one step (val_every and the epoch's end)
                        self._end_of_validation(self.validate())
                        validated_at = self.step
                    self.save(self.last_path)
            if self.batch_in_epoch != 0 and validated_at != self.step:  # finished mid-epoch: one last validation
                self._end_of_validation(self.validate())
            self.save(self.last_path)
        except KeyboardInterrupt:
            self.save(self.last_path)  # interrupted runs lose nothing
            interrupted = True
            if is_main_process():
                print(f"\ninterrupted at step {self.step}; resume with the same command (last.pt saved)")
        finally:
            bar.close()
            restore_sigterm(previous)
        if is_main_process() and not interrupted:
            self._write_summary(time.time() - t0, self.step - start_step)
        return self._result(True) if interrupted else self._finished()

    def _finished(self) -> PretrainResult:
        """The result of a run that reached max_steps; a run that never had a finite validation loss diverged: an
        error that says so and which settings to change (its files stay, for a look at metrics.jsonl)."""
        if not math.isfinite(self.best_val):
            t = self.cfg.train
            raise TrainingDiverged(
                f"{self.out_dir}: the run diverged: no finite validation loss in {self.step} steps "
                f"({self.skipped_steps} steps skipped for a non-finite loss or gradient); no best.pt was kept. "
                f"Lower train.lr_vision / train.lr_text (now {t.lr_vision:g} / {t.lr_text:g})"
                + ("" if t.precision == "fp32" else f" or use train.precision=fp32 (now {t.precision})")
                + ", then start afresh (--no-resume or another --out)")
        return self._result(False)

    def _result(self, interrupted: bool) -> PretrainResult:
        return PretrainResult(self.out_dir, self.step, self.best_val, self.last_path,
                              self.best_path if self.best_path.exists() else None, interrupted)

    def _write_summary(self, seconds: float, steps: int) -> None:
        summary = {"steps": self.step, "steps_this_run": steps, "seconds_this_run": round(seconds, 2),
                   "best_val_loss": self.best_val, "skipped_steps": self.skipped_steps,
                   "device": str(self.device), "precision": self.precision.name,
                   "precision_reason": self.precision.reason}
        atomic_write(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        try:
            from ..viz.plots import plot_loss_curves
            fig = plot_loss_curves(self.metrics_path)
            fig.savefig(self.out_dir / "loss_curves.png", dpi=110, bbox_inches="tight")
            import matplotlib.pyplot as plt
            plt.close(fig)
        except ImportError:  # matplotlib is optional for headless training
            pass


def run_folder(out_dir: str | Path) -> Path:
    """``out_dir`` as a run folder: new or an existing folder, not a file."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a folder; a run needs a folder (--out) of its own")
    return out_dir


EARLIER_RESULTS = ("best.pt", "summary.json", "result.json", "encoder.pt")  # what a finished run leaves


def sigterm_as_interrupt():
    """Make SIGTERM (``kill``, a batch scheduler's time limit, a closing notebook kernel's manager) raise
    KeyboardInterrupt in the main thread, so a run saves ``last.pt`` and stops as on Ctrl-C; returns the previous
    handler for :func:`restore_sigterm` (None where signals cannot be set: another thread, no SIGTERM)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")

    return signal.signal(signal.SIGTERM, interrupt)


def restore_sigterm(previous) -> None:
    if previous is not None:
        import signal
        signal.signal(signal.SIGTERM, previous)


def refuse_to_replace(out_dir: Path, resume: bool) -> None:
    """A resuming run that finds no ``last.pt`` would start afresh; in a folder that holds another run's results
    (a pre-training whose ``last.pt`` is gone, a fine-tuning folder) that replaces them: refused, unless
    ``resume=False`` (``--no-resume``) says to start afresh there."""
    if not resume or (out_dir / "last.pt").exists():
        return
    found = [name for name in EARLIER_RESULTS if (out_dir / name).exists()]
    if found:
        raise ValueError(f"{out_dir}: holds an earlier run's {', '.join(found)} but no last.pt to resume from; a new "
                         f"run here would replace them. Choose another --out, or pass --no-resume to start afresh "
                         f"in this folder")


def pretrain(cfg: Config, out_dir: str | Path, train_set: Dataset | None = None, val_set: Dataset | None = None,
             resume: bool = True, progress: bool = True, stop_after: int | None = None,
             overwrite: bool = False) -> PretrainResult:
    """Pre-train REFERS. Without datasets, ``cfg.data.source`` decides: ``"source"`` reads the rendered IU
    source domain in ``cfg.data.root`` (train and validation splits), ``"toy"`` makes schematic studies.
    One process at a time per folder: while another holds ``out_dir`` this raises
    :class:`~refers_lite.training.run_lock.RunFolderBusy` before writing anything. A folder another kind of run made
    (``run.json``) is refused (:class:`~refers_lite.training.run_lock.RunFolderOwned`); ``overwrite=True`` replaces
    whatever run is there and starts afresh."""
    from .run_lock import claim_run_folder, run_lock
    out_dir = run_folder(out_dir)
    if not overwrite:  # both before anything is written there
        claim_run_folder(out_dir, "pre-training", check_only=True)
        refuse_to_replace(out_dir, resume)
    with run_lock(out_dir, log=None, wait=False) if is_main_process() else nullcontext():
        if is_main_process():
            from .checkpoint import remove_stale_temps
            claim_run_folder(out_dir, "pre-training", cfg.to_dict(), overwrite=overwrite)
            remove_stale_temps(out_dir)  # a save that a SIGKILL cut short; this process now owns the folder
        return _pretrain(cfg, out_dir, train_set, val_set, resume and not overwrite, progress, stop_after)


def _pretrain(cfg: Config, out_dir: Path, train_set: Dataset | None, val_set: Dataset | None, resume: bool,
              progress: bool, stop_after: int | None) -> PretrainResult:
    if (train_set is None or val_set is None) and cfg.data.source == "source":
        from ..data.loading.source_studies import SourceStudies
        train_set = SourceStudies(cfg.data.root, "train", max_report_len=cfg.model.max_report_len,
                                  renders=cfg.data.renders)  # validation: each study's first render only
        val_set = SourceStudies(cfg.data.root, "validation", max_report_len=cfg.model.max_report_len,
                                report_tokenizer=train_set.report_tokenizer)
        if train_set.report_tokenizer.vocab_size > cfg.model.vocab_size:
            raise ValueError(f"the report vocabulary has {train_set.report_tokenizer.vocab_size} tokens > "
                             f"model.vocab_size={cfg.model.vocab_size}")
    if train_set is None or val_set is None:
        from ..data.loading.toy import build_toy_datasets
        train_set, val_set, tok = build_toy_datasets(cfg)
        if tok.vocab_size > cfg.model.vocab_size:
            raise ValueError(f"report vocabulary has {tok.vocab_size} tokens > model.vocab_size={cfg.model.vocab_size}")
        out_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and (out_dir / "last.pt").exists() and (out_dir / "report_tokenizer.json").exists()):
            tok.save(out_dir / "report_tokenizer.json")  # a resumed run keeps its own (a rejected one too)
    trainer = Pretrainer(cfg, train_set, val_set, out_dir, progress=progress)
    return trainer.fit(resume=resume, stop_after=stop_after)
