"""REFERS: the whole pre-training model (Figure 1a).

    study (B, V, C, H, W) --radiograph transformer--> per-view tokens (B, V, 1+N, D)
      --view fusion--> v^k (B, V*D) and weights (B, V)
      --Task 1: report transformer over the fused visual tokens--> report logits  (Eq. 1)
      --Task 2: cos(v^k, t^k) / tau against BERT(report) projected to V*D     (Eq. 2)

The report transformer cross-attends to the study's fused visual tokens: for each view, its
aggregation embedding and its patch tokens, all scaled by that view's fusion weight. The
weighted aggregation embeddings, concatenated, are exactly v^k, so the decoder reads v^k (as the
paper says) together with the spatial detail a report needs, and both tasks train the fusion.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import Config, LossConfig, ModelConfig
from ..losses import REFERSLoss, REFERSLosses
from .conv_encoder import ConvEncoder
from .projection_head import StudyProjection
from .radiograph_transformer import RadiographTransformer
from .report_transformer import ReportTransformer
from .text_encoder import TextEncoder
from .view_fusion import ViewFusion


@dataclass
class StudyFeatures:
    fused: torch.Tensor  # v^k (B, V*D)
    weights: torch.Tensor  # (B, V), sum to 1 over the real views
    memory: torch.Tensor  # weighted visual tokens (B, V*(1+N), D)
    memory_mask: torch.Tensor  # (B, V*(1+N)) True = real view


@dataclass
class REFERSOutput:
    losses: REFERSLosses
    study: torch.Tensor  # v^k (B, V*D)
    report: torch.Tensor | None  # t^k (B, V*D), None when Task 2 is off
    view_weights: torch.Tensor  # (B, V)
    logits: torch.Tensor | None  # (B, T-1, vocab), None when Task 1 is off


class REFERS(nn.Module):
    def __init__(self, model: ModelConfig, loss: LossConfig):
        super().__init__()
        self.cfg, self.loss_cfg = model, loss
        if model.encoder == "vit":
            self.encoder = RadiographTransformer.from_config(model)
        else:  # Table 3: a ResNet instead of the radiograph transformer, its features mapped to the model width
            self.encoder = ConvEncoder.from_config(model, out_width=model.width)
        self.fusion = ViewFusion.from_config(model)
        # an option (model.study_projection): a head on v^k for Task 2 alone; None = the paper (Eq. 2 on v^k)
        self.study_projection = StudyProjection(self.fusion.out_dim, model.study_projection) \
            if model.study_projection != "none" and loss.use_consistency else None
        self.decoder = ReportTransformer.from_config(model) if loss.use_generation else None
        self.text_encoder = TextEncoder.from_config(model, self.fusion.out_dim) if loss.use_consistency else None
        self.criterion = REFERSLoss(loss, model.pad_id)

    @classmethod
    def from_config(cls, cfg: Config) -> "REFERS":
        return cls(cfg.model, cfg.loss)

    def set_grad_checkpointing(self, on: bool = True) -> None:
        """Recompute activations in the backward: the radiograph transformer's blocks and BERT's layers."""
        self.encoder.grad_checkpointing = on
        if self.text_encoder is not None:
            bb = self.text_encoder.backbone
            new_api = hasattr(bb, "activation_checkpointing_enable")  # transformers >= 5.x renamed it
            if on and new_api:
                bb.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            elif on:
                bb.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            elif getattr(bb, "is_activation_checkpointing" if new_api else "is_gradient_checkpointing", False):
                (bb.activation_checkpointing_disable if new_api else bb.gradient_checkpointing_disable)()

    # -- vision side --------------------------------------------------------------------------
    def encode_study(self, images: torch.Tensor, view_mask: torch.Tensor | None = None) -> StudyFeatures:
        if images.ndim != 5:
            raise ValueError(f"expected a batch of studies (B, V, C, H, W), got shape {tuple(images.shape)}")
        B, V = images.shape[:2]
        if B == 0:
            raise ValueError("empty batch: no studies to encode")
        if V != self.cfg.num_views:
            raise ValueError(f"expected {self.cfg.num_views} views per study (pad and mask missing ones), got {V}")
        if view_mask is None:
            view_mask = torch.ones(B, V, dtype=torch.bool, device=images.device)
        view_mask = view_mask.bool()
        tokens = self._encode_views(images.flatten(0, 1), view_mask.flatten()).unflatten(0, (B, V))  # (B, V, 1+N, D)
        fused, weights = self.fusion(tokens[:, :, 0], view_mask)  # (B, V*D), (B, V)
        memory = (tokens * weights[:, :, None, None].to(tokens.dtype)).flatten(1, 2)  # (B, V*(1+N), D)
        memory_mask = view_mask[:, :, None].expand(-1, -1, tokens.shape[2]).flatten(1)  # (B, V*(1+N))
        return StudyFeatures(fused, weights, memory, memory_mask)

    def _encode_views(self, images: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """images (B*V, C, H, W), real (B*V,) bool -> tokens (B*V, 1+N, D), padded views' tokens zero.

        Only the real views go through the encoder: the fusion and the decoder's memory give padded views
        weight 0 anyway, so the study feature is the same, padding costs nothing, and blank padding never enters
        the statistics of a BatchNorm (the convolutional stem's). (Pre-training pads no view: the paper's rule
        repeats a film to fill the slots, ``data/views.py``; evaluation and the joint space mask views.)
        Under torch.compile every view is encoded (no data-dependent shapes)."""
        if torch.compiler.is_compiling() or bool(real.all()):
            return self.encoder.forward_tokens(images)
        idx = real.nonzero().squeeze(1)  # (R,)
        enc = self.encoder.forward_tokens(images.index_select(0, idx))  # (R, 1+N, D)
        return enc.new_zeros((images.shape[0], *enc.shape[1:])).index_copy(0, idx, enc)  # (B*V, 1+N, D)

    def joint_study(self, fused: torch.Tensor) -> torch.Tensor:
        """v^k (B, V*D) -> the study side of Eq. 2: v^k itself (paper), or through the projection head."""
        return fused if self.study_projection is None else self.study_projection(fused)

    # -- both tasks ---------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, view_mask: torch.Tensor | None, report_ids: torch.Tensor | None = None,
                text_ids: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                gather: bool = False) -> REFERSOutput:
        """images (B, V, C, H, W); view_mask (B, V); report_ids (B, T) decoder ids, BOS ... EOS, padded;
        text_ids / text_mask (B, L) for the text encoder. ``gather``: under DDP, both losses over the
        global batch of all ranks (training); off for per-process evaluation."""
        study = self.encode_study(images, view_mask)
        B = images.shape[0]
        logits = targets = report = None
        if self.decoder is not None:
            if report_ids is None or report_ids.ndim != 2 or report_ids.shape[0] != B or report_ids.shape[1] < 2:
                raise ValueError(f"report generation needs report_ids of shape ({B}, T>=2), got "
                                 f"{None if report_ids is None else tuple(report_ids.shape)}")
            logits = self.decoder(report_ids[:, :-1], study.memory, study.memory_mask)  # teacher forcing
            targets = report_ids[:, 1:]
        if self.text_encoder is not None:
            if text_ids is None or text_mask is None or text_ids.shape[0] != B:
                raise ValueError(f"study-report consistency needs text_ids and text_mask with {B} rows")
            report = self.text_encoder(text_ids, text_mask)  # (B, V*D)
        same = same_text(text_ids, text_mask) if self.loss_cfg.duplicate_positives and report is not None else None
        joint = self.joint_study(study.fused) if report is not None else study.fused
        # Eq. 2 on v^k itself beside the head's (loss.vk_consistency_weight; without a head it is Eq. 2 already)
        extra = report is not None and self.study_projection is not None and self.loss_cfg.vk_consistency_weight > 0
        vk = study.fused if extra else None
        losses = self.criterion(logits, targets, joint, report, gather, same, vk)
        return REFERSOutput(losses, study.fused, report, study.weights, logits)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, view_mask: torch.Tensor | None = None, max_len: int | None = None,
                 num_beams: int = 1) -> torch.Tensor:
        """Reports from images alone: (B, V, C, H, W) -> (B, L) ids, BOS ... EOS, padded."""
        if self.decoder is None:
            raise RuntimeError("this model was built without the report transformer (loss.use_generation=false)")
        study = self.encode_study(images, view_mask)
        return self.decoder.generate(study.memory, study.memory_mask, max_len=max_len, num_beams=num_beams)


def same_text(text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) token ids and mask -> (B, B) bool: True where two reports are the same text (as tokenised)."""
    ids = text_ids.masked_fill(~text_mask.bool(), -1)  # padding never makes two texts equal
    return (ids[:, None, :] == ids[None, :, :]).all(-1)  # (B, B), diagonal True
