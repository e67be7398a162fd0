"""Attention-based view fusion (paper, Methods 4.2 and Figure 1c).

"We first concatenate the features of all views, and then feed the concatenated features to a
multi-layer perceptron to compute an attention value for each view. Next, we apply the softmax
function to normalize these attention values, which are used as weights to produce a weighted
version of the individual representations. Finally, these weighted representations are
concatenated to form a unified visual feature for describing the whole study."

So for V views with features f_1..f_V (each D):
    a = MLP([f_1; ...; f_V])          (V scores)
    w = softmax(a)                    (over views; padded views get weight 0)
    v^k = [w_1 f_1; ...; w_V f_V]     (V * D)

The weights are returned so the course can plot them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig


class ViewFusion(nn.Module):
    def __init__(self, dim: int, num_views: int = 3, hidden: int = 512):
        super().__init__()
        self.dim, self.num_views = dim, num_views
        self.mlp = nn.Sequential(nn.Linear(num_views * dim, hidden), nn.ReLU(), nn.Linear(hidden, num_views))

    @classmethod
    def from_config(cls, m: ModelConfig) -> "ViewFusion":
        return cls(m.width, m.num_views, m.fusion_hidden)

    @property
    def out_dim(self) -> int:
        return self.num_views * self.dim

    def forward(self, feats: torch.Tensor, view_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, V, D), view_mask (B, V) bool (True = real view) -> (v^k (B, V*D), weights (B, V))."""
        B, V, D = feats.shape
        if V != self.num_views or D != self.dim:
            raise ValueError(f"view fusion expects (B, {self.num_views}, {self.dim}) features, got {tuple(feats.shape)}")
        if view_mask is None:
            view_mask = torch.ones(B, V, dtype=torch.bool, device=feats.device)
        elif view_mask.shape != (B, V):
            raise ValueError(f"view_mask must have shape {(B, V)}, got {tuple(view_mask.shape)}")
        if not torch.compiler.is_compiling() and not bool(view_mask.any(dim=1).all()):  # a check, not traced
            raise ValueError("every study needs at least one real view (a view_mask row is all False)")
        feats = feats * view_mask.unsqueeze(-1).to(feats.dtype)  # padded views contribute nothing
        scores = self.mlp(feats.reshape(B, V * D))  # (B, V)
        scores = scores.float().masked_fill(~view_mask, float("-inf"))
        weights = scores.softmax(dim=-1).to(feats.dtype)  # (B, V), rows sum to 1
        fused = (feats * weights.unsqueeze(-1)).reshape(B, V * D)  # (B, V*D): weighted views, concatenated
        return fused, weights
