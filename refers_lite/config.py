"""Configs are data: named profiles, validated, saved with every checkpoint.

Four profiles:

* ``smoke``: seconds on a CPU; CI and the tests use it.
* ``demo``: learns something real on a 2-core laptop CPU in minutes.
* ``gpu``: the course recipe at 224 px with a ViT-S/16-sized encoder, for one lab or Colab GPU (about an hour for
  the whole book, projected).
* ``paper``: the paper's setting (Methods 4.1-4.2): ViT-B/16 at 224 px, batch 32 studies,
  300k iterations, 10k warm-up, lr 3e-3 (radiograph transformer, fusion) and 3e-4
  (report transformer, BERT), SGD momentum 0.9, weight decay 1e-4.

Overrides are ``"section.key=value"`` strings (from the CLI's ``--set``) or nested dicts
(from notebooks). Unknown keys are errors that name the key and list the valid ones.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

AGG_MODES = ("concat", "add", "none")
ACTIVATIONS = ("relu", "gelu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")
POOLINGS = ("mean", "cls")
DATA_SOURCES = ("toy", "source")
STEMS = ("patch", "conv")  # the paper's patch projection; a convolutional stem (Xiao et al. 2021)
STUDY_PROJECTIONS = ("none", "mlp")  # v^k as it is (paper); a SimCLR-style MLP head before Eq. 2


class ConfigError(ValueError):
    """A configuration that cannot be used (unknown key, bad value, bad type)."""


@dataclass
class ModelConfig:
    # Radiograph transformer (Methods 4.1)
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 1
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    act: str = "relu"  # the paper's two-layer ReLU perceptron; "gelu" as in ViT
    agg_mode: str = "concat"  # "concat" (paper), "add" (official code), "none" (plain ViT)
    encoder: str = "vit"  # "vit": the radiograph transformer; a timm ResNet name (Table 3's first row)
    drop_path: float = 0.0
    stem: str = "patch"  # "patch" (paper: one linear patch projection); "conv" (Xiao et al. 2021)
    # View fusion (Methods 4.2)
    num_views: int = 3
    fusion_hidden: int = 512
    study_projection: str = "none"  # "none" (paper: Eq. 2 on v^k); "mlp": Linear-BN-ReLU-Linear on v^k first
    # Text encoder (BERT family)
    text_encoder: str = "minilm"  # "minilm" (offline default), "random" (untrained BERT), a hub name or a path
    text_pooling: str = "mean"
    text_freeze_layers: int = 0
    text_max_len: int = 128
    random_text_width: int = 32  # size of the "random" BERT (smoke runs, benchmarks)
    random_text_depth: int = 2
    random_text_heads: int = 2
    # Report transformer (decoder)
    vocab_size: int = 3000
    decoder_width: int = 512
    decoder_depth: int = 6  # Vaswani et al.'s base decoder: 6 x 512, 8 heads, FFN 2048
    decoder_heads: int = 8
    decoder_ffn: int = 2048
    decoder_dropout: float = 0.1
    max_report_len: int = 128
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


@dataclass
class LossConfig:
    temperature: float = 0.1  # tau of Eq. 2 (the start value when learned)
    learn_temperature: bool = False  # learn log(1/tau) as CLIP does (clamped at tau >= 0.01)
    generation_weight: float = 1.0  # Task 1, Eq. 1
    consistency_weight: float = 1.0  # Task 2, Eq. 2
    use_generation: bool = True
    use_consistency: bool = True
    duplicate_positives: bool = False  # identical report texts in a batch count as positives (soft targets)
    # with a projection head (model.study_projection): Eq. 2 on v^k itself too, the paper's form, with this weight
    # (0: the head's Eq. 2 alone). Under the head alone v^k keeps a common part (cosine 0.998 between studies).
    # Without a head (Eq. 2 is on v^k already) or without Task 2 it has no effect.
    vk_consistency_weight: float = 0.0


# Options added after runs were recorded, and their default, the behaviour those runs had (Config.identity).
LATER_OPTIONS = {("loss", "vk_consistency_weight"): 0.0}


@dataclass
class TrainConfig:
    optimizer: str = "sgd"  # the paper's SGD; "adamw" escapes the collapsed start faster in short CPU runs
    batch_size: int = 32  # studies per step
    max_steps: int = 300_000
    warmup_steps: int = 10_000
    lr_vision: float = 3e-3  # radiograph transformer and view fusion
    lr_text: float = 3e-4  # report transformer and BERT
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    precision: str = "auto"
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    val_every: int = 0  # 0: once per epoch (paper); N: also every N steps
    max_nonfinite: int = 20  # consecutive skipped steps before giving up
    device: str = "auto"
    compile: bool = False  # torch.compile the model (minutes of compilation, then faster steps)
    grad_checkpointing: bool = False  # recompute activations in the backward: less memory, ~30 % more compute


@dataclass
class AugmentConfig:
    """The paper's augmentation (Methods 4.2), for pre-training (the ``data`` section) and fine-tuning alike:
    resize 256 then random crop 224, rotation +-10 degrees, brightness and contrast, horizontal flip (in
    pre-training with 'left' and 'right' swapped in the report)."""
    augment: bool = True
    hflip_prob: float = 0.5
    crop_fraction: float = 224 / 256
    max_rotation_deg: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2

    def check_augment(self, prefix: str = "") -> None:
        require(0 <= self.hflip_prob <= 1, f"{prefix}hflip_prob must be in [0, 1], got {self.hflip_prob}")
        require(0 < self.crop_fraction <= 1, f"{prefix}crop_fraction must be in (0, 1], got {self.crop_fraction}")
        require(0 <= self.max_rotation_deg <= 180, f"{prefix}max_rotation_deg must be in [0, 180]")
        require(0 <= self.brightness < 1 and 0 <= self.contrast < 1,
               f"{prefix}brightness and {prefix}contrast must be in [0, 1)")

    def augmenter(self, out_size: int):
        """The device-side :class:`~refers_lite.data.loading.gpu_augment.StudyAugment` of these settings (no flips)."""
        from .data.loading.gpu_augment import StudyAugment
        return StudyAugment(out_size, crop_fraction=self.crop_fraction, max_rotation_deg=self.max_rotation_deg,
                            brightness=self.brightness, contrast=self.contrast)


@dataclass
class DataConfig(AugmentConfig):
    source: str = "toy"  # "toy": schematic studies with templated reports; "source": the source domain folder in root
    # the source domain folder, for source="source": the rendered IU domain (`refers-lite data build`), or your own
    # studies or MIMIC-CXR (`refers-lite data import`, book page "Use your own data")
    root: str = "data/synthetic/source"
    renders: int = 1  # films per report served for pre-training (a domain built with `data build --renders N`)
    num_studies: int = 64  # toy studies
    val_fraction: float = 0.125  # toy studies
    seed: int = 0


@dataclass
class Config:
    profile: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """What names a run (``experiments`` digests it into the run folder's name): :meth:`to_dict` without the
        options added after runs were recorded, where they hold the default that reproduces those runs, so
        that a run made before an option existed is found again, not trained twice."""
        d = self.to_dict()
        for (section, key), default in LATER_OPTIONS.items():
            if d[section].get(key) == default:
                del d[section][key]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        cfg = from_dict(cls, d, "")
        cfg.validate()
        return cfg

    def save(self, path: str | Path) -> None:
        from .files import atomic_write
        atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        m, t, lo = self.model, self.train, self.loss
        require(m.agg_mode in AGG_MODES, f"model.agg_mode must be one of {AGG_MODES}, got {m.agg_mode!r}")
        if m.encoder != "vit":
            from .models.conv_encoder import is_convnet
            require(is_convnet(m.encoder), f"model.encoder must be 'vit' or a timm ResNet name (e.g. resnet18), "
                                          f"got {m.encoder!r}")
        require(m.stem in STEMS, f"model.stem must be one of {STEMS}, got {m.stem!r}")
        require(m.stem == "patch" or (m.patch_size >= 2 and m.patch_size & (m.patch_size - 1) == 0),
               f"model.stem=conv needs a power-of-two model.patch_size >= 2, got {m.patch_size}")
        require(m.study_projection in STUDY_PROJECTIONS,
               f"model.study_projection must be one of {STUDY_PROJECTIONS}, got {m.study_projection!r}")
        require(m.act in ACTIVATIONS, f"model.act must be one of {ACTIVATIONS}, got {m.act!r}")
        require(m.text_pooling in POOLINGS, f"model.text_pooling must be one of {POOLINGS}, got {m.text_pooling!r}")
        for name in ("image_size", "patch_size", "width", "heads", "decoder_width", "decoder_heads", "decoder_ffn",
                     "random_text_width", "random_text_heads", "random_text_depth", "text_max_len"):
            require(getattr(m, name) >= 1, f"model.{name} must be >= 1, got {getattr(m, name)}")
        require(m.mlp_ratio > 0, f"model.mlp_ratio must be > 0, got {m.mlp_ratio}")
        require(m.image_size % m.patch_size == 0,
               f"model.image_size ({m.image_size}) must be a multiple of model.patch_size ({m.patch_size})")
        require(m.width % m.heads == 0, f"model.width ({m.width}) must be divisible by model.heads ({m.heads})")
        require(m.decoder_width % m.decoder_heads == 0,
               f"model.decoder_width ({m.decoder_width}) must be divisible by model.decoder_heads ({m.decoder_heads})")
        for name in ("depth", "num_views", "decoder_depth", "vocab_size", "max_report_len", "fusion_hidden"):
            require(getattr(m, name) >= 1, f"model.{name} must be >= 1, got {getattr(m, name)}")
        require(0 <= m.decoder_dropout < 1 and 0 <= m.drop_path < 1, "dropout rates must be in [0, 1)")
        require(m.random_text_width % m.random_text_heads == 0,
               "model.random_text_width must be divisible by model.random_text_heads")
        require(m.text_freeze_layers >= 0, "model.text_freeze_layers must be >= 0")
        ids = (m.pad_id, m.bos_id, m.eos_id)
        require(len(set(ids)) == 3 and all(0 <= i < m.vocab_size for i in ids),
               f"model.pad_id/bos_id/eos_id must be distinct ids below vocab_size, got {ids}")
        require(lo.temperature > 0, f"loss.temperature must be > 0, got {lo.temperature}")
        require(lo.vk_consistency_weight >= 0 and math.isfinite(lo.vk_consistency_weight),
               f"loss.vk_consistency_weight must be a finite number >= 0, got {lo.vk_consistency_weight}")
        require(lo.use_generation or lo.use_consistency,
               "at least one of loss.use_generation / loss.use_consistency must be on")
        require(t.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}, got {t.precision!r}")
        require(t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {OPTIMIZERS}, got {t.optimizer!r}")
        require(t.batch_size >= 1, "train.batch_size must be >= 1")
        require(t.max_steps >= 1, "train.max_steps must be >= 1")
        require(0 <= t.warmup_steps <= t.max_steps, "train.warmup_steps must be in [0, max_steps]")
        require(t.lr_vision > 0 and t.lr_text > 0, "learning rates must be > 0")
        require(0 <= t.momentum < 1, "train.momentum must be in [0, 1)")
        require(t.ckpt_every >= 1 and t.log_every >= 1, "train.ckpt_every and train.log_every must be >= 1")
        require(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
        require(t.val_every >= 0, f"train.val_every must be >= 0 (0: once per epoch), got {t.val_every}")
        require(t.num_workers >= 0, f"train.num_workers must be >= 0 (0: load in the main process), got {t.num_workers}")
        for key in ("lr_vision", "lr_text"):
            require(math.isfinite(getattr(t, key)), f"train.{key} must be a finite number, got {getattr(t, key)}")
        require(t.grad_clip >= 0 and math.isfinite(t.grad_clip), f"train.grad_clip must be >= 0, got {t.grad_clip}")
        require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", t.device) is not None,
               f"train.device must be auto, cpu, mps, cuda or cuda:N, got {t.device!r}")
        d = self.data
        require(d.source in DATA_SOURCES, f"data.source must be one of {DATA_SOURCES}, got {d.source!r}")
        require(0 < d.val_fraction < 1, "data.val_fraction must be in (0, 1)")
        d.check_augment("data.")
        require(self.data.num_studies >= 2, "data.num_studies must be >= 2")
        require(d.renders >= 1, f"data.renders must be >= 1, got {d.renders}")


def require(ok: bool, msg: str) -> None:
    """Raise :class:`ConfigError` with ``msg`` unless ``ok``: the one check every config section's validation uses."""
    if not ok:
        raise ConfigError(msg)


def from_dict(cls, d: Mapping[str, Any], prefix: str):
    if not isinstance(d, Mapping):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in d.items():
        f = fields[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = from_dict(type(default), value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, default, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, key: str) -> Any:
    """Type-check a value against its field's default; strings from the CLI are parsed."""
    want = type(default)
    if isinstance(value, str) and want is not str:
        value = _parse_str(value, want, key)
    if want is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if want is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if want is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if want is str and not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _parse_str(s: str, want: type, key: str) -> Any:
    if want is bool:
        low = s.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, got {s!r}")
    try:
        value = float(s) if want is int and ("e" in s.lower() or "." in s) else want(s)
    except ValueError:
        raise ConfigError(f"{key} must be {want.__name__}, got {s!r}") from None
    if want is int and isinstance(value, float):
        if not value.is_integer():  # never a silent int(2.5) == 2
            raise ConfigError(f"{key} must be a whole number, got {s!r}")
        value = int(value)
    return value


# -- profiles --------------------------------------------------------------------------------
DEMO_STEPS = 1800  # the demo pre-training: 37.6 passes over the 3,062 training reports, batch 64 (the budget curve,
# benchmarks/course_levers.py --budget-curve: 900 steps leave the 1 % VinBigData-like effect and the probe gain short)
GPU_STEPS = 2400  # the gpu pre-training: 100 epochs of them, batch 128
# The course recipe, shared by demo and gpu: measured to learn both tasks on a 2-core CPU where the paper's choices
# at the demo's size leave Eq. 2 at chance (book/demo_diagnosis.md, section 5). Each departure is an option whose
# paper value stays the default: a convolutional stem (Xiao et al. 2021), a projection head before Eq. 2, the text
# encoder frozen (its pooled report features remembered), reports kept to 128 word pieces, no augmentation; and the
# rendered IU source domain (`make data`), as the paper pre-trains on its reports' studies, with every report paired
# with three films rendered for it (other patients, lesion draws, acquisitions), so that the encoder cannot learn one
# film per report (the paper has one study per report; one render is data.renders=1).
COURSE_MODEL = dict(stem="conv", study_projection="mlp", text_encoder="minilm", text_freeze_layers=6,
                    text_max_len=128, vocab_size=2048)
COURSE_DATA = dict(source="source", augment=False, hflip_prob=0.0, renders=3)
# tau = 0.2, not the paper's 0.1: in the demo's 1,800 steps the softer logits bring the validation Eq. 2 0.53 nats
# below chance (0.31 at tau = 0.1) and Recall@10 to 5.0x chance (3.4x); book/demo_diagnosis.md
COURSE_LOSS = dict(temperature=0.2)
PROFILES: dict[str, dict] = {
    "paper": {"data": dict(source="source")},  # the rendered IU source domain (`refers-lite data build`)
    "demo": {
        # the course recipe, 64 studies a batch
        "model": dict(image_size=64, patch_size=8, width=128, depth=4, heads=4, fusion_hidden=128, **COURSE_MODEL,
                      decoder_width=128, decoder_depth=2, decoder_heads=4, decoder_ffn=256, max_report_len=48),
        # AdamW, not the paper's SGD: in a few hundred CPU steps SGD leaves the study-report
        # consistency loss at chance (features start nearly identical across studies and SGD
        # moves them apart slowly; measured in runs of 150-600 steps), AdamW learns both tasks.
        "train": dict(optimizer="adamw", batch_size=64, max_steps=DEMO_STEPS, warmup_steps=DEMO_STEPS // 10, lr_vision=1e-3,
                      lr_text=1e-3, grad_clip=1.0, log_every=10, ckpt_every=100, num_workers=0),
        "loss": dict(COURSE_LOSS),
        "data": dict(COURSE_DATA),
    },
    # One GPU (a lab's, or Colab's): the course recipe at the paper's 224 px with a ViT-S/16-sized encoder, sized so
    # that the shared pre-training and every chapter fit in about an hour on one H100-class GPU (a projection from
    # counted FLOPs: benchmarks/gpu_projection.py; not yet measured on a GPU).
    "gpu": {
        "model": dict(image_size=224, patch_size=16, width=384, depth=12, heads=6, fusion_hidden=512, **COURSE_MODEL,
                      decoder_width=256, decoder_depth=3, decoder_heads=4, decoder_ffn=1024, max_report_len=64),
        "train": dict(optimizer="adamw", batch_size=128, max_steps=GPU_STEPS, warmup_steps=GPU_STEPS // 10,
                      lr_vision=5e-4, lr_text=5e-4, grad_clip=1.0, log_every=20, ckpt_every=200, num_workers=4),
        "loss": dict(COURSE_LOSS),
        "data": dict(COURSE_DATA),
    },
    "smoke": {
        "model": dict(image_size=32, patch_size=8, width=32, depth=2, heads=2, fusion_hidden=32,
                      text_encoder="random", text_max_len=32, random_text_width=32, random_text_depth=1,
                      vocab_size=128, decoder_width=32, decoder_depth=1, decoder_heads=2,
                      decoder_ffn=64, max_report_len=32),
        "train": dict(batch_size=4, max_steps=12, warmup_steps=2, lr_vision=3e-2, lr_text=3e-3,
                      precision="fp32", log_every=2, ckpt_every=4, num_workers=0),
        "data": dict(num_studies=24, val_fraction=0.25, hflip_prob=0.0),
    },
}


def deep_update(base: dict, upd: Mapping[str, Any]) -> dict:
    """Merge ``upd`` into ``base`` in place; unknown keys are kept so validation names them."""
    for k, v in upd.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def parse_overrides(items: Sequence[str]) -> dict:
    """``["train.max_steps=5", "model.agg_mode=add"]`` -> nested dict (values stay strings)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"override key {key!r} must look like section.key (e.g. train.max_steps)")
        out.setdefault(parts[0], {})[parts[1]] = value.strip()
    return out


def get_config(profile: str = "smoke", overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Config:
    """Resolve a named profile plus overrides into a validated :class:`Config`."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    d = Config(profile=profile).to_dict()
    deep_update(d, copy.deepcopy(PROFILES[profile]))
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(list(overrides))
        deep_update(d, overrides)
    return Config.from_dict(d)
