"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``, loaded strictly.

A training checkpoint holds the resolved config, model, optimiser, scheduler, scaler, RNG states
and the sampler position. ``export_image_encoder`` writes just the radiograph transformer and its
config for fine-tuning; ``load_image_encoder`` rebuilds it and loads every key or fails, listing
the missing and unexpected keys (the official code silently loads 0 of 200 keys).
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..config import Config, ConfigError

ENCODER_FORMAT = "refers_lite.image_encoder.v1"
TRAIN_FORMAT = "refers_lite.pretrain.v1"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model."""


def save_checkpoint(payload: Mapping[str, Any], path: str | Path) -> Path:
    """Write atomically (temp file + rename): an interrupted save never leaves a torn file. Written through a file
    object, so the archive's inner name does not depend on the temp file's: the same payload gives the same bytes
    (a file's sha256 identifies its contents, as fine-tuning's reuse check relies on)."""
    from ..files import atomic_save
    return atomic_save(path, lambda f: torch.save(dict(payload), f))


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files a killed save left in a run folder (``.<name>.<random>.tmp`` of
    :func:`refers_lite.files.atomic_save`, ``last.pt.<random>.tmp`` of earlier versions); returns them. Call it only while
    holding the folder (:func:`~refers_lite.training.run_lock.run_lock`): another process's save in progress looks
    the same."""
    folder = Path(folder)
    stale = [p for p in (*folder.glob("*.pt.*.tmp"), *folder.glob(".*.tmp")) if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` with the weights-only unpickler: tensors, lists, dicts, str and numbers, never code.

    A file it refuses raises :class:`CheckpointError` naming the file; PyTorch's message is not passed on
    (it suggests turning the check off, which would run whatever the file holds)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f" (it holds {found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: refused to load{what}: not a refers_lite checkpoint, or saved by "
                              f"untrusted code; a checkpoint holds only tensors, lists, dicts, strings and "
                              f"numbers") from None


def load_checkpoint(path: str | Path, expect_format: str | None = None) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = safe_torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:  # corrupt, truncated or not a torch file
        raise CheckpointError(f"{path}: cannot read this checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(f"{path}: not a refers_lite checkpoint (no 'format' entry)")
    if expect_format is not None and ckpt["format"] != expect_format:
        raise CheckpointError(f"{path}: expected a {expect_format!r} checkpoint, found {ckpt['format']!r}"
                              + (" (run `refers-lite export` on a pre-training checkpoint first)"
                                 if expect_format == ENCODER_FORMAT else ""))
    return ckpt


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every key or raise, naming the missing and unexpected keys and shape mismatches."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or shapes:
        def fmt(keys):
            return ", ".join(keys[:20]) + (f" ... (+{len(keys) - 20} more)" if len(keys) > 20 else "")
        lines = [f"{source}: checkpoint does not match the model "
                 f"({len(own) - len(missing)} of {len(own)} model keys found)"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {fmt(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {fmt(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {fmt(shapes)}")
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(state_dict, strict=True)


def save_image_encoder(path: str | Path, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor],
                       step: int = 0, **extra: Any) -> Path:
    """Write an image-encoder file (what :func:`load_image_encoder` reads): the encoder's weights, the config
    that builds it, and ``extra`` keys (``arch`` for a ConvNet; provenance such as ``method``, ``source``)."""
    return save_checkpoint({"format": ENCODER_FORMAT, "config": dict(config), "state_dict": dict(state_dict),
                            "step": step, **extra}, path)


def _check_export_target(ckpt_path: Path, out_path: Path) -> None:
    if out_path.is_dir():
        raise ValueError(f"{out_path}: is a folder; name the encoder file to write (e.g. {out_path / 'encoder.pt'})")
    if out_path.exists() and ckpt_path.exists() and os.path.samefile(out_path, ckpt_path):
        raise ValueError(f"{out_path}: is the checkpoint being exported; writing the encoder there would replace "
                         f"it: name another file (e.g. encoder.pt)")


def export_image_encoder(ckpt_path: str | Path, out_path: str | Path) -> Path:
    """Pre-training checkpoint -> image-encoder file for fine-tuning (never over the checkpoint itself)."""
    _check_export_target(Path(ckpt_path), Path(out_path))
    ckpt = load_checkpoint(ckpt_path, TRAIN_FORMAT)
    prefix = "encoder."
    sd = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    if not sd:
        raise CheckpointError(f"{ckpt_path}: no radiograph transformer weights (no '{prefix}*' keys)")
    encoder = ckpt["config"].get("model", {}).get("encoder", "vit")
    extra = {"arch": encoder} if encoder != "vit" else {}  # REFERS pre-trained with a ResNet
    return save_image_encoder(out_path, ckpt["config"], sd, ckpt.get("step", 0), **extra)


def _saved_config(ckpt: dict, path: str | Path) -> Config:
    try:
        return Config.from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its saved config is invalid: {e}") from e


def load_refers(path: str | Path):
    """Rebuild the whole pre-training model from a training checkpoint (best.pt / last.pt); strict."""
    from ..models.refers import REFERS
    ckpt = load_checkpoint(path, TRAIN_FORMAT)
    cfg = _saved_config(ckpt, path)
    model = REFERS.from_config(cfg)
    load_state_dict_strict(model, ckpt["model"], str(path))
    return model.eval(), cfg


def load_image_encoder(path: str | Path):
    """Rebuild the image encoder from an exported file (the radiograph transformer, or the ConvNet named by
    its ``arch``); strict load."""
    from ..models.radiograph_transformer import RadiographTransformer
    ckpt = load_checkpoint(path, ENCODER_FORMAT)
    cfg = _saved_config(ckpt, path)
    arch = ckpt.get("arch", "vit")  # "vit": the radiograph transformer; a timm name: a ConvNet baseline
    if arch == "vit":
        enc = RadiographTransformer.from_config(cfg.model)
    else:
        from ..models.conv_encoder import ConvEncoder
        projected = "proj.weight" in ckpt["state_dict"]  # REFERS's ResNet maps its features to the model width
        enc = ConvEncoder.from_config(cfg.model, arch=arch, out_width=cfg.model.width if projected else None)
    load_state_dict_strict(enc, ckpt["state_dict"], str(path))
    return enc
