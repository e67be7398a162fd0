"""A convolutional encoder (a timm ResNet) behind the radiograph transformer's interface.

The paper's "LSP (ConvNet)" baseline and the first row of its ablation (Table 3) use a ResNet
instead of the radiograph transformer. :class:`ConvEncoder` wraps ``timm.create_model`` (random
weights, one input channel, no classifier) so that the fine-tuning head and the exported-encoder
format treat both alike: ``forward(x)`` gives (pooled feature (B, D), spatial tokens (B, h*w, D)).
On CUDA it runs channels-last (NHWC), the layout cuDNN's convolutions are fastest in.
"""
from __future__ import annotations

import timm
import torch
import torch.nn as nn

from ..config import ModelConfig

CONVNET_OF_PROFILE = {"smoke": "resnet18", "demo": "resnet18", "gpu": "resnet18", "paper": "resnet50"}


def is_convnet(name: str) -> bool:
    """A timm ResNet name (what ``model.encoder`` may name instead of "vit")."""
    return name.startswith(("resnet", "resnext", "seresnet")) and name in timm.list_models(name)


class ConvEncoder(nn.Module):
    """``out_width``: a linear map of every feature to that width (REFERS with a ResNet: the view fusion and
    the report transformer read features of the model's width); None keeps the ResNet's own."""

    def __init__(self, arch: str = "resnet50", image_size: int = 224, in_chans: int = 1, out_width: int | None = None):
        super().__init__()
        self.arch, self.image_size, self.in_chans = arch, image_size, in_chans
        self.net = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
        self.proj = nn.Linear(self.net.num_features, out_width) if out_width else None
        self.width = out_width or self.net.num_features
        self.grad_checkpointing = False  # accepted for REFERS.set_grad_checkpointing; a ResNet is not recomputed
        self._channels_last = False


    @classmethod
    def from_config(cls, m: ModelConfig, arch: str | None = None, out_width: int | None = None) -> "ConvEncoder":
        """The ResNet ``arch`` (default ``m.encoder``) at the config's image size and channels."""
        return cls(arch or m.encoder, m.image_size, m.in_chans, out_width)
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"{self.arch} expects images of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        if x.is_cuda:
            if not self._channels_last:
                self.net.to(memory_format=torch.channels_last)
                self._channels_last = True
            x = x.contiguous(memory_format=torch.channels_last)
        f = self.net.forward_features(x)  # (B, D, h, w)
        pooled, tokens = f.mean((2, 3)), f.flatten(2).transpose(1, 2)  # (B, D), (B, h*w, D)
        if self.proj is not None:
            pooled, tokens = self.proj(pooled), self.proj(tokens)  # (B, width), (B, h*w, width)
        return pooled, tokens

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The radiograph transformer's token layout: (B, 1 + h*w, D), the pooled feature first (the role of
        the aggregation embedding), then one token per cell of the last feature map."""
        pooled, tokens = self(x)
        return torch.cat([pooled[:, None], tokens], dim=1)
