"""The fine-tuning model: the pre-trained radiograph transformer plus a linear head on the
aggregation embedding (what the paper fine-tunes on the target domains; Methods, "Fine-tuning").

One head for every fine-tuning in the project: REFERS, the baselines (LSP's pre-training too) and the CAMs."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["HEAD_NORMS", "RadiographClassifier"]

# "none": the paper's plain linear layer; "batchnorm": the aggregation embedding standardised first (BatchNorm
# without affine parameters, as MAE's linear probe does)
HEAD_NORMS = ("none", "batchnorm")


class RadiographClassifier(nn.Module):
    """An encoder whose forward gives (aggregation embedding (B, D), ...) plus a linear layer: logits (B, K).

    The state dict holds ``encoder.*``, ``head.*`` (and ``norm.*`` running statistics with ``norm="batchnorm"``),
    the keys fine-tuning checkpoints have always had."""

    def __init__(self, encoder: nn.Module, num_outputs: int, norm: str = "none"):
        super().__init__()
        if norm not in HEAD_NORMS:
            raise ValueError(f"norm must be one of {HEAD_NORMS}, got {norm!r}")
        self.encoder = encoder
        self.norm = nn.BatchNorm1d(encoder.width, affine=False, eps=1e-6) if norm == "batchnorm" else nn.Identity()
        self.head = nn.Linear(encoder.width, num_outputs)
        self.image_size = encoder.image_size

    @classmethod
    def from_pretrained(cls, path: str | Path, num_outputs: int, norm: str = "none") -> "RadiographClassifier":
        """Build from an exported image encoder (``refers-lite export``); loading is strict."""
        from ..training.checkpoint import load_image_encoder
        return cls(load_image_encoder(path), num_outputs, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, K)
        agg, _ = self.encoder(x)  # (B, D)
        # the head in fp32 even under bf16 / fp16 autocast: it is tiny, and a head started from a linear probe
        # (head_init=probe) holds large weights whose products nearly cancel, which bf16's 8 bits destroy
        with torch.autocast(device_type=agg.device.type, enabled=False):
            return self.head(self.norm(agg.float()))
