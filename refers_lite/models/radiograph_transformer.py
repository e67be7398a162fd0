"""The radiograph transformer (paper, Methods 4.1 and Figure 1b).

A ViT-like encoder assembled from timm layers (``PatchEmbed``, ``Mlp``, ``DropPath``);
REFERS adds only the aggregation embedding handling and the *recurrent concatenation*.

Patch + position embedding
    The paper concatenates each patch vector with a learnable position feature and maps the
    pair linearly to the model width. A linear map of a concatenation ``W [x; p] = W_x x + W_p p``
    is a patch projection plus a learnable per-position vector, so a learnable position
    embedding *added* to the patch embedding is exactly that family of functions. We use the
    additive form (timm's), initialised randomly (truncated normal, std 0.02, as the paper
    says "randomly initializing all position embeddings").

Aggregation embedding
    A learnable token (ViT's [CLS]) initialised to zeros, as the paper states.

Recurrent concatenation (``agg_mode="concat"``)
    "in the last layer, recurrent concatenation is performed to repeatedly concatenate the
    learned aggregation embedding with the learned representation of every patch". What we
    implement: right before the last block, every patch token ``z_i`` (B, N, D) is concatenated
    with the aggregation token ``z_agg`` (B, 1, D), broadcast to all N positions, giving
    (B, N, 2D); a linear layer projects it back to D. The aggregation token itself passes
    through unchanged, then the last block runs as usual. "Repeatedly" reads as "once per
    patch" (the aggregation embedding is joined to each of the N patch representations, not
    prepended once to the sequence as in ViT), and "in the last layer" places it at the input
    of the final block so that the final self-attention mixes patch features that already carry
    the global summary. The projection starts as ``[I, 0]`` (identity on the patch half, zero
    on the aggregation half), so at initialisation the network equals a plain ViT and
    training learns how much global context to inject.

    ``agg_mode="add"`` is the official code's variant (the aggregation token *added* to every
    patch token at the same place: ``z_i + z_agg``); ``agg_mode="none"`` is a plain ViT.

Convolutional stem (``stem="conv"``, an option; the paper's is ``"patch"``)
    Xiao et al. (2021), "Early convolutions help transformers see better": the one large-stride
    patch projection is replaced by a few 3x3 stride-2 convolutions (BatchNorm, ReLU) and a 1x1
    convolution to the width, reaching the same token grid. It gives a from-scratch ViT the locality
    a small data set cannot teach it; the blocks after it are unchanged.

Attention uses ``torch.nn.functional.scaled_dot_product_attention``. Attention maps, for CAMs
and attention rollout, are recorded when ``store_attention=True`` (they are computed
explicitly only then, so the fast kernel is used otherwise). On a CPU under bf16 autocast SDPA's flash kernel is
slower than its plain (math) one at short sequences, its backward most of all (forward + backward, one thread:
128 x 4 heads x 65 tokens, 114 ms flash against 34 ms math; 128 x 4 x 130 tokens, 193 against 164; but the paper's
24 x 12 x 197 tokens, 228 against 345), so there the math kernel is chosen up to 160 tokens (the demo's 65); fp32,
longer sequences and GPUs keep PyTorch's choice. ``benchmarks/pretrain_throughput.py --variants bf16,bf16+flash``
times the whole step both ways.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from ..config import AGG_MODES, STEMS, ModelConfig

MATH_ATTENTION_ON_CPU_BF16 = True  # the CPU bf16 kernel choice above; benchmarks/pretrain_throughput.py turns it off
MATH_ATTENTION_MAX_TOKENS = 160  # to compare; beyond this many tokens flash is the faster one (module docstring)


class Attention(nn.Module):
    """Multi-head self-attention with SDPA; optionally records its attention map."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.store_attention = False
        self.attention_map: torch.Tensor | None = None  # (B, heads, L, L) when stored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, d)
        if self.store_attention:
            attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, h, L, L)
            attn = attn.softmax(dim=-1)
            self.attention_map = attn.detach()
            out = attn @ v
        elif (MATH_ATTENTION_ON_CPU_BF16 and q.device.type == "cpu" and q.dtype == torch.bfloat16
              and L <= MATH_ATTENTION_MAX_TOKENS):
            with sdpa_kernel(SDPBackend.MATH):  # CPU bf16: the math kernel is the faster one (module docstring)
                out = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, d)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, d)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + MHA(LN(x)); x + MLP(LN(x)) (Figure 1b)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, act: str, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        act_layer = nn.ReLU if act == "relu" else nn.GELU
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer)  # two-layer perceptron
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class RecurrentConcatenation(nn.Module):
    """Join the aggregation embedding to every patch representation: Linear([z_i; z_agg]) -> D."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(2 * dim, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Start as the identity on the patch half (a plain ViT at initialisation)."""
        self.proj.weight.zero_()
        self.proj.weight[:, : self.dim].copy_(torch.eye(self.dim))
        self.proj.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1 + N, D), aggregation first
        agg, patches = x[:, :1], x[:, 1:]  # (B, 1, D), (B, N, D)
        joined = torch.cat([patches, agg.expand_as(patches)], dim=-1)  # (B, N, 2D)
        return torch.cat([agg, self.proj(joined)], dim=1)  # (B, 1 + N, D)


class ConvStem(nn.Module):
    """Xiao et al. (2021): log2(patch) 3x3 stride-2 convolutions (BN, ReLU), channels doubling up to the width,
    then a 1x1 convolution to the width: (B, C, H, W) -> (B, N, D), N = (H / patch)^2, as ``PatchEmbed``."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        steps = patch_size.bit_length() - 1
        if patch_size < 2 or 2 ** steps != patch_size:
            raise ValueError(f"the convolutional stem needs a power-of-two patch size >= 2, got {patch_size}")
        self.grid_size = (img_size // patch_size,) * 2
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers, c_in = [], in_chans
        for i in range(steps):
            c_out = max(embed_dim // 2 ** (steps - 1 - i), 16)
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, embed_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, D, h, w) -> (B, N, D)


class RadiographTransformer(nn.Module):
    """Image -> (aggregation embedding (B, D), patch tokens (B, N, D))."""

    # the ModelConfig fields it is built from (the constructor's arguments, same names)
    CONFIG_KEYS = ("image_size", "patch_size", "in_chans", "width", "depth", "heads", "mlp_ratio", "act", "agg_mode",
                   "drop_path", "stem")

    def __init__(self, image_size: int = 224, patch_size: int = 16, in_chans: int = 1, width: int = 768,
                 depth: int = 12, heads: int = 12, mlp_ratio: float = 4.0, act: str = "relu",
                 agg_mode: str = "concat", drop_path: float = 0.0, stem: str = "patch"):
        super().__init__()
        if agg_mode not in AGG_MODES:
            raise ValueError(f"agg_mode must be one of {AGG_MODES}, got {agg_mode!r}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        self.agg_mode = agg_mode
        self.width = width
        self.in_chans = in_chans
        self.image_size = image_size
        self.stem = stem
        self.patch_embed = PatchEmbed(img_size=image_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=width) if stem == "patch" else \
            ConvStem(image_size, patch_size, in_chans, width)
        self.grid_size = self.patch_embed.grid_size  # (14, 14) for 224 / 16
        n = self.patch_embed.num_patches
        self.agg_token = nn.Parameter(torch.zeros(1, 1, width))  # aggregation embedding, zeros (paper)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, width))
        trunc_normal_(self.pos_embed, std=0.02)
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, act, dpr[i]) for i in range(depth))
        self.rec_concat = RecurrentConcatenation(width) if agg_mode == "concat" else None
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.grad_checkpointing = False  # recompute each block's activations in the backward (memory for time)
        self.apply(_init_weights)
        if self.rec_concat is not None:  # _init_weights overwrote the identity start
            self.rec_concat.reset_parameters()

    @classmethod
    def from_config(cls, m: ModelConfig) -> "RadiographTransformer":
        return cls(**{k: getattr(m, k) for k in cls.CONFIG_KEYS})

    def set_store_attention(self, on: bool = True) -> None:
        for blk in self.blocks:
            blk.attn.store_attention = on
            blk.attn.attention_map = None

    def attention_maps(self) -> list[torch.Tensor]:
        """Attention maps of every block from the last forward with ``store_attention`` on."""
        maps = [blk.attn.attention_map for blk in self.blocks]
        if any(m is None for m in maps):
            raise RuntimeError("no attention maps recorded: call set_store_attention(True) before the forward")
        return maps  # depth x (B, heads, 1 + N, 1 + N)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normalised tokens (B, 1 + N, D), aggregation token first."""
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(f"radiograph transformer expects images of shape (B, {self.in_chans}, "
                             f"{self.image_size}, {self.image_size}), got {tuple(x.shape)}")
        x = self.patch_embed(x)  # (B, N, D)
        x = torch.cat([self.agg_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # (B, 1+N, D)
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            if i == last:
                if self.agg_mode == "concat":
                    x = self.rec_concat(x)
                elif self.agg_mode == "add":
                    x = torch.cat([x[:, :1], x[:, 1:] + x[:, :1]], dim=1)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.forward_tokens(x)  # (B, 1 + N, D)
        return tokens[:, 0], tokens[:, 1:]  # (B, D), (B, N, D)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
