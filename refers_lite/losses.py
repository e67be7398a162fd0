"""The two cross-supervision losses of REFERS (Methods 4.2).

* Task 1, report generation: the language-modelling loss of Eq. 1, the negative log-likelihood of
  every report token c_t (t = 2..T) given the previous tokens and the study feature v^k. We
  average it over the real (non-padding) tokens of the batch, so its scale does not depend on
  report length or batch size.
* Task 2, study-report consistency: the contrastive loss of Eq. 2, InfoNCE over the cosine
  similarity of v^k and t^k divided by a temperature tau, with the other reports of the
  mini-batch as negatives. Eq. 2 is written image -> text; we use it in both directions
  (image -> text and text -> image) and average them, as CLIP and ConVIRT do. Both directions
  carry gradient to both encoders (the official code loses the text -> image gradient through
  ``.item()``; ``tests/test_losses.py`` proves ours does not).
* The overall loss is their sum (paper), with per-task weights and switches for the ablations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LossConfig


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in fp32 (or fp64) even under fp16/bf16 autocast."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Eq. 1: logits (B, T, V) predicting targets (B, T); padding is ignored. Mean over real tokens."""
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    return F.cross_entropy(_at_least_fp32(logits).flatten(0, 1), targets.flatten(), ignore_index=pad_id)


def consistency_logits(v: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """cos(v^k, t^i) / tau for every pair: (B, D) x (B, D) -> (B, B), rows = studies."""
    v = F.normalize(_at_least_fp32(v), dim=-1)
    t = F.normalize(_at_least_fp32(t), dim=-1)
    return v @ t.t() / temperature


def consistency_loss(v: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 2, symmetric: mean of the image->text and text->image InfoNCE terms."""
    if v.shape != t.shape or v.ndim != 2:
        raise ValueError(f"study features {tuple(v.shape)} and report features {tuple(t.shape)} must both be (B, D)")
    logits = consistency_logits(v, t, temperature)  # (B, B)
    labels = torch.arange(v.shape[0], device=v.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


@dataclass
class REFERSLosses:
    total: torch.Tensor
    generation: torch.Tensor | None
    consistency: torch.Tensor | None

    def as_floats(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach())}
        if self.generation is not None:
            out["loss_generation"] = float(self.generation.detach())
        if self.consistency is not None:
            out["loss_consistency"] = float(self.consistency.detach())
        return out


class REFERSLoss(nn.Module):
    """Weighted sum of the switched-on tasks: w1 * L_language + w2 * L_contrast."""

    def __init__(self, cfg: LossConfig, pad_id: int):
        super().__init__()
        self.cfg, self.pad_id = cfg, pad_id

    def forward(self, logits: torch.Tensor | None, targets: torch.Tensor | None,
                v: torch.Tensor | None, t: torch.Tensor | None) -> REFERSLosses:
        c = self.cfg
        gen = language_model_loss(logits, targets, self.pad_id) if c.use_generation else None
        con = consistency_loss(v, t, c.temperature) if c.use_consistency else None
        total = sum(w * l for w, l in ((c.generation_weight, gen), (c.consistency_weight, con)) if l is not None)
        return REFERSLosses(total, gen, con)
