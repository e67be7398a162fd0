"""The fine-tuning model: the pre-trained radiograph transformer plus a linear head on the
aggregation embedding (what the paper fine-tunes on the target domains)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .radiograph_transformer import RadiographTransformer


class RadiographClassifier(nn.Module):
    def __init__(self, encoder: RadiographTransformer, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.width, num_classes)

    @classmethod
    def from_pretrained(cls, path: str | Path, num_classes: int) -> "RadiographClassifier":
        """Build from an exported image encoder (``refers-lite export``); loading is strict."""
        from ..training.checkpoint import load_image_encoder
        return cls(load_image_encoder(path), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> logits (B, num_classes)
        agg, _ = self.encoder(x)  # (B, D)
        return self.head(agg)
