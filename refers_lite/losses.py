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

With ``gather=True`` under DDP (several processes), both losses are computed over the *global*
batch: global negatives for Eq. 2 and the global token count for Eq. 1 (see ``training/distributed.py``).
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LossConfig
from .training.distributed import all_reduce_sum, gather_with_grad, rank, world_size


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in fp32 (or fp64) even under fp16/bf16 autocast."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int, gather: bool = False
                        ) -> torch.Tensor:
    """Eq. 1: logits (B, T, V) predicting targets (B, T); padding is ignored. Mean over real tokens.

    ``gather`` (under DDP): the mean over the real tokens of all ranks' batches, scaled by W so that
    DDP's gradient average gives the single-process gradient of the combined batch.
    """
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree")
    if not gather or world_size() == 1:
        return F.cross_entropy(_at_least_fp32(logits).flatten(0, 1), targets.flatten(), ignore_index=pad_id)
    nll = F.cross_entropy(_at_least_fp32(logits).flatten(0, 1), targets.flatten(), ignore_index=pad_id,
                          reduction="sum")
    tokens = all_reduce_sum(targets.ne(pad_id).sum().to(nll.dtype))  # real tokens of the global batch
    return nll * world_size() / tokens.clamp_min(1)


def consistency_logits(v: torch.Tensor, t: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """cos(v^k, t^i) / tau for every pair: (B, D) x (B, D) -> (B, B), rows = studies."""
    v = F.normalize(_at_least_fp32(v), dim=-1)
    t = F.normalize(_at_least_fp32(t), dim=-1)
    return v @ t.t() / temperature


def consistency_loss(v: torch.Tensor, t: torch.Tensor, temperature: float | torch.Tensor,
                     gather: bool = False, same: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 2, symmetric: mean of the image->text and text->image InfoNCE terms.

    ``same`` (B, B) bool (an option, ``loss.duplicate_positives``): pairs whose reports are the same text.
    Eq. 2 treats another study with the very same report ("No acute cardiopulmonary abnormality.") as a
    negative, a false negative; with ``same`` the target of each row is spread evenly over all its
    same-text partners (soft targets, in the spirit of MedCLIP's semantic matching). Without duplicates in
    the batch it is exactly Eq. 2.

    ``gather`` (under DDP): this rank's B studies are scored against the reports of all W ranks and
    its B reports against all W*B studies (global negatives, gradient kept through the gather).
    """
    if v.shape != t.shape or v.ndim != 2:
        raise ValueError(f"study features {tuple(v.shape)} and report features {tuple(t.shape)} must both be (B, D)")
    if same is not None and gather and world_size() > 1:
        raise NotImplementedError("loss.duplicate_positives is not implemented across processes (DDP)")
    if not gather or world_size() == 1:
        logits = consistency_logits(v, t, temperature)  # (B, B)
        if same is not None:
            if same.shape != logits.shape:
                raise ValueError(f"same-text matrix {tuple(same.shape)} must be {tuple(logits.shape)}")
            target = same.to(logits.dtype)
            target = target / target.sum(1, keepdim=True)  # (B, B), rows sum to 1; symmetric matrix
            return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
        labels = torch.arange(v.shape[0], device=v.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    v = F.normalize(_at_least_fp32(v), dim=-1)  # (B, D)
    t = F.normalize(_at_least_fp32(t), dim=-1)
    v_all, t_all = gather_with_grad(v), gather_with_grad(t)  # (W*B, D), rank order
    labels = rank() * v.shape[0] + torch.arange(v.shape[0], device=v.device)  # own pairs in the global batch
    image_to_text = v @ t_all.t() / temperature  # (B, W*B)
    text_to_image = t @ v_all.t() / temperature  # (B, W*B)
    return 0.5 * (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels))


@dataclass
class REFERSLosses:
    total: torch.Tensor
    generation: torch.Tensor | None
    consistency: torch.Tensor | None
    temperature: float | None = None  # tau, logged when it is learned
    consistency_vk: torch.Tensor | None = None  # Eq. 2 on v^k beside the head's (loss.vk_consistency_weight)

    def as_floats(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach())}
        if self.temperature is not None:
            out["temperature"] = self.temperature
        if self.generation is not None:
            out["loss_generation"] = float(self.generation.detach())
        if self.consistency is not None:
            out["loss_consistency"] = float(self.consistency.detach())
        if self.consistency_vk is not None:
            out["loss_consistency_vk"] = float(self.consistency_vk.detach())
        return out


class REFERSLoss(nn.Module):
    """Weighted sum of the switched-on tasks: w1 * L_language + w2 * L_contrast (+ w3 * L_contrast on v^k itself,
    an option beside a projection head: ``loss.vk_consistency_weight``)."""

    MIN_TEMPERATURE = 0.01  # CLIP's clamp (logit scale <= 100)

    def __init__(self, cfg: LossConfig, pad_id: int):
        super().__init__()
        self.cfg, self.pad_id = cfg, pad_id
        # learn_temperature: log(1/tau) is a parameter (CLIP): when the study and report features differ
        # little at first, a fixed tau leaves the logits nearly equal and Eq. 2 can settle at log(B)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature))) \
            if cfg.learn_temperature and cfg.use_consistency else None

    def temperature(self) -> float | torch.Tensor:
        if self.log_inv_temperature is None:
            return self.cfg.temperature
        return torch.exp(-self.log_inv_temperature.float().clamp(max=math.log(1.0 / self.MIN_TEMPERATURE)))

    def forward(self, logits: torch.Tensor | None, targets: torch.Tensor | None,
                v: torch.Tensor | None, t: torch.Tensor | None, gather: bool = False,
                same: torch.Tensor | None = None, vk: torch.Tensor | None = None) -> REFERSLosses:
        """``v``: the study side of Eq. 2 (v^k, or the projection head's output); ``gather``: under DDP, losses
        over the global batch (see the module doc); ``same``: (B, B) pairs of identical reports, counted as
        positives (``loss.duplicate_positives``); ``vk`` (B, D): v^k itself beside a projection head's output,
        scored against the same t^k when ``loss.vk_consistency_weight`` > 0 (None: no such term)."""
        c = self.cfg
        gen = language_model_loss(logits, targets, self.pad_id, gather) if c.use_generation else None
        tau = self.temperature()
        con = consistency_loss(v, t, tau, gather, same) if c.use_consistency else None
        con_vk = None
        if c.use_consistency and c.vk_consistency_weight > 0 and vk is not None:
            con_vk = consistency_loss(vk, t, tau, gather, same)  # (), Eq. 2 as the paper writes it
        total = sum(w * l for w, l in ((c.generation_weight, gen), (c.consistency_weight, con),
                                       (c.vk_consistency_weight, con_vk)) if l is not None)
        return REFERSLosses(total, gen, con, float(tau.detach()) if torch.is_tensor(tau) else None, con_vk)
