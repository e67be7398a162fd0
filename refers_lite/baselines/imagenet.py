"""ImageNet initialisation: the paper's transfer-learning baseline (ref. [11], Table 1, Figure 2).

The radiograph transformer starts from a ViT pre-trained on ImageNet instead of from REFERS. As the
paper requires for fairness, the backbone is REFERS's own (a ViT plus the recurrent concatenation):
timm's ViT-B/16 weights are copied into :class:`RadiographTransformer` key by key, the ImageNet
[CLS] token becoming the aggregation embedding. The recurrent concatenation starts as the identity
(its own initialisation), so at the start the network computes exactly what timm's ViT computes
(tested on a small ViT). timm adapts the RGB patch projection to one channel (it sums the three
channels' filters) and resamples the position embeddings when the image size differs.

The weights come from the Hugging Face hub through ``timm.create_model(..., pretrained=True)``:
with internet they download once; offline, or at a profile whose ViT has no ImageNet counterpart
(``smoke`` and ``demo`` use small ViTs), :func:`imagenet_encoder` raises
:class:`ImageNetUnavailable` with the reason, and the experiment tables print the row as not
available here. Nothing stands in for the weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch.nn as nn

from ..training.checkpoint import load_state_dict_strict, save_image_encoder
from ..config import ModelConfig, get_config
from ..models.radiograph_transformer import RadiographTransformer

# The timm ImageNet ViT at the width, depth, heads and patch of each profile's radiograph transformer.
IMAGENET_VIT_OF_PROFILE = {"paper": "vit_base_patch16_224.augreg2_in21k_ft_in1k"}

__all__ = ["IMAGENET_VIT_OF_PROFILE", "ImageNetUnavailable", "radiograph_transformer_from_timm", "imagenet_encoder"]


class ImageNetUnavailable(RuntimeError):
    """The ImageNet weights cannot be had here (offline, or none exist at the profile's model size)."""


def _check_shape(vit: nn.Module, m: ModelConfig, name: str) -> None:
    got = dict(width=vit.embed_dim, depth=len(vit.blocks), heads=vit.blocks[0].attn.num_heads,
               patch_size=vit.patch_embed.patch_size[0], in_chans=vit.patch_embed.proj.in_channels,
               image_size=vit.patch_embed.img_size[0])
    want = dict(width=m.width, depth=m.depth, heads=m.heads, patch_size=m.patch_size, in_chans=m.in_chans,
                image_size=m.image_size)
    bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    if bad:
        raise ValueError(f"{name}: its shape differs from the radiograph transformer's: "
                         + ", ".join(f"{k} {g} (timm) vs {w}" for k, (g, w) in bad.items()))
    if not isinstance(vit.blocks[0].mlp.act, nn.GELU) or m.act != "gelu":
        raise ValueError(f"{name}: ImageNet ViTs use GELU; the radiograph transformer must be built with act='gelu'")


def radiograph_transformer_from_timm(vit: nn.Module, m: ModelConfig, name: str = "timm ViT") -> RadiographTransformer:
    """A radiograph transformer of config ``m`` carrying the weights of a timm ``VisionTransformer``.

    Every timm tensor finds its place (the [CLS] token is the aggregation embedding, the rest keep
    their names); the recurrent concatenation keeps its identity start. Strict both ways: a timm key
    with no place, or a radiograph-transformer key left without a timm weight, is an error."""
    _check_shape(vit, m, name)
    enc = RadiographTransformer.from_config(m)
    src = {("agg_token" if k == "cls_token" else k): v for k, v in vit.state_dict().items()}
    own = enc.state_dict()
    keep = {k: v for k, v in own.items() if k.startswith("rec_concat.")}  # REFERS's own part: identity start
    load_state_dict_strict(enc, {**src, **keep}, name)
    return enc


def imagenet_encoder(profile: str, out_path: str | Path, model_name: str | None = None) -> Path:
    """Write the exported-encoder file (as :func:`refers_lite.training.checkpoint.export_image_encoder` writes) of the
    profile's radiograph transformer initialised from ImageNet; reused when it exists.

    Raises :class:`ImageNetUnavailable` when the profile's ViT has no ImageNet counterpart or timm cannot
    load the weights (no internet, ``HF_HUB_OFFLINE=1``)."""
    out_path = Path(out_path)
    if out_path.is_file():
        return out_path
    cfg = get_config(profile, {"model": {"act": "gelu", "encoder": "vit"}})
    m = cfg.model
    name = model_name or IMAGENET_VIT_OF_PROFILE.get(profile)
    if name is None:
        raise ImageNetUnavailable(f"no ImageNet-pre-trained ViT exists at the {profile} profile's size (width "
                                  f"{m.width}, depth {m.depth}, {m.image_size} px, patch {m.patch_size}); "
                                  f"the paper profile uses {IMAGENET_VIT_OF_PROFILE['paper']}")
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ImageNetUnavailable(f"HF_HUB_OFFLINE is set: timm cannot download {name}")
    import timm
    try:
        vit = timm.create_model(name, pretrained=True, num_classes=0, in_chans=m.in_chans, img_size=m.image_size)
    except Exception as e:  # no network, hub refused, unknown name: the row is not available, never faked
        raise ImageNetUnavailable(f"timm could not load {name}: {type(e).__name__}: {e}") from e
    enc = radiograph_transformer_from_timm(vit, m, name)
    return save_image_encoder(out_path, cfg.to_dict(), enc.state_dict(), source=f"timm:{name}")
