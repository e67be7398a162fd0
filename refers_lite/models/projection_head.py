"""A projection head on the study feature before Eq. 2 (an option; the paper has none).

The paper scores ``cos(v^k, t^k) / tau`` on the fused study feature itself. Contrastive learners that
train an image encoder from scratch put a small head between the representation and the loss
(SimCLR, Chen et al. 2020; MoCo v3, Chen et al. 2021): ``Linear -> BatchNorm -> ReLU -> Linear``. Its
BatchNorm standardises every dimension over the batch, so the loss sees how studies *differ*: a
from-scratch radiograph transformer starts with aggregation embeddings that are almost the same vector
for every film (cosine 0.999 between studies, ``book/demo_diagnosis.md``), and Eq. 2 on them has almost
no gradient. The head serves Task 2 alone; report generation, fine-tuning and the exported encoder use
v^k and the encoder's own features, as without it.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class StudyProjection(nn.Module):
    """(B, D) -> (B, D): ``kind="mlp"``: Linear-BN-ReLU-Linear (hidden = D); ``kind="none"``: identity."""

    def __init__(self, dim: int, kind: str = "mlp"):
        super().__init__()
        if kind not in ("none", "mlp"):
            raise ValueError(f"study projection must be 'none' or 'mlp', got {kind!r}")
        self.kind = kind
        self.net = nn.Identity() if kind == "none" else nn.Sequential(
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.kind != "none" and self.training and v.shape[0] < 2:
            raise ValueError("the study projection's BatchNorm needs at least 2 studies per training batch")
        return self.net(v)
