"""Zero-shot classification in the joint space of Task 2 (Eq. 2), without any labelled image.

REFERS learns a space where a study and the report that describes it are close:
``s(v, t) = cos(v, t) / tau`` (Eq. 2). The paper only uses that space to pre-train the encoder.
Here we ask it directly whether a radiograph shows a finding, as CheXzero does (Tiu et al., 2022):
write one sentence that says the finding is there (positive prompt, t+) and one that says it is not
(negative prompt, t-), and take the softmax over the pair of similarities::

    p(class | image) = exp s(v, t+) / (exp s(v, t+) + exp s(v, t-)) = sigmoid(s(v, t+) - s(v, t-))

Each class of a domain is scored on its own (one-vs-rest), and the test split's per-class ROC-AUC
(``metrics.per_class_auc``) says how well the score ranks positive images above negative ones.
AUC depends only on the ranking, so tau does not change it; a model that learned nothing scores
about 0.5.

The prompts are written the way the IU reports the model saw say things ("heart size is normal",
"no pleural effusion"): :data:`PROMPTS` covers the class names of the target domains
(``data/target_domains.py``), the findings the renderer draws (``data/findings``) and the
structured labels (``data/structured_labels.py``); any other name falls back to ``"there is X."`` /
``"there is no X."``. Where a prompt pair stands for one of the structured labels, the report-text
label extractor must read the positive prompt as that label and the negative one as not
(``tests/test_zero_shot.py`` checks it).

A radiograph is a study of one view; see ``evaluation/joint_space.py`` for how it is fed to the view fusion.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .metrics import mean_auc, per_class_auc

__all__ = ["PromptPair", "PROMPTS", "normalize_name", "prompt_pair", "zero_shot_probabilities", "ZeroShotResult",
           "zero_shot_domain", "chance_mean_auc"]


@dataclass(frozen=True)
class PromptPair:
    positive: str  # the finding is there
    negative: str  # it is not
    label: str | None = None  # the structured label (structured_labels.LABELS) the pair stands for, if any


def _pp(pos: str, neg: str, label: str | None = None) -> PromptPair:
    return PromptPair(pos, neg, label)


#: normalised class name (:func:`normalize_name`) -> prompt pair
PROMPTS: dict[str, PromptPair] = {
    "cardiomegaly": _pp("heart size is enlarged.", "heart size is normal.", "cardiomegaly"),
    "effusion": _pp("there is a pleural effusion.", "there is no pleural effusion.", "pleural_effusion"),
    "pleural effusion": _pp("there is a pleural effusion.", "there is no pleural effusion.", "pleural_effusion"),
    "atelectasis": _pp("there is atelectasis.", "there is no atelectasis.", "atelectasis"),
    "infiltration": _pp("there is an infiltrate in the lung.", "there is no infiltrate.", "airspace_opacity"),
    "consolidation": _pp("there is focal airspace consolidation.", "there is no focal airspace consolidation.",
                         "airspace_opacity"),
    "pneumonia": _pp("there is pneumonia.", "there is no pneumonia.", "airspace_opacity"),
    "lung opacity": _pp("there is an opacity in the lung.", "the lungs are clear.", "airspace_opacity"),
    "airspace opacity": _pp("there is airspace disease.", "there is no airspace disease.", "airspace_opacity"),
    "mass": _pp("there is a mass in the lung.", "there is no mass.", "mass"),
    "nodule": _pp("there is a pulmonary nodule.", "there are no pulmonary nodules.", "nodule"),
    "nodule mass": _pp("there is a nodule or mass in the lung.", "there is no nodule or mass.", "nodule"),
    "pneumothorax": _pp("there is a pneumothorax.", "there is no pneumothorax.", "pneumothorax"),
    "edema": _pp("there is pulmonary edema.", "there is no pulmonary edema.", "edema"),
    "emphysema": _pp("the lungs are hyperinflated with emphysema.", "there is no emphysema.", "emphysema"),
    "fibrosis": _pp("there is pulmonary fibrosis.", "there is no pulmonary fibrosis.", "fibrosis"),
    "pulmonary fibrosis": _pp("there is pulmonary fibrosis.", "there is no pulmonary fibrosis.", "fibrosis"),
    "ild": _pp("there is interstitial lung disease.", "there is no interstitial lung disease.", "fibrosis"),
    "pleural thickening": _pp("there is pleural thickening.", "there is no pleural thickening.", "pleural_thickening"),
    "hernia": _pp("there is a hiatal hernia.", "there is no hiatal hernia.", "hernia"),
    "hiatal hernia": _pp("there is a hiatal hernia.", "there is no hiatal hernia.", "hernia"),
    "granuloma": _pp("there is a calcified granuloma.", "there is no granuloma.", "granuloma"),
    "calcified granuloma": _pp("there is a calcified granuloma.", "there is no granuloma.", "granuloma"),
    "fracture": _pp("there is a rib fracture.", "there is no fracture.", "fracture"),
    "support device": _pp("there is a catheter in place.", "there are no lines or tubes.", "support_device"),
    "catheter": _pp("there is a catheter in place.", "there are no lines or tubes.", "support_device"),
    "aortic enlargement": _pp("the aorta is enlarged and tortuous.", "the aorta is normal in size."),
    "calcification": _pp("there are calcifications.", "there are no calcifications."),
    "other lesion": _pp("there is a lesion in the chest.", "there is no lesion in the chest."),
    "degenerative spine": _pp("there are degenerative changes of the spine.", "the osseous structures are normal."),
    "tuberculosis": _pp("there are upper lobe opacities consistent with tuberculosis.",
                        "there is no evidence of tuberculosis."),
    # COVID-19 against every other pneumonia of the collection: its typical look against its absence
    "covid 19": _pp("there are bilateral peripheral ground-glass opacities.", "there are no bilateral opacities."),
    "ground glass covid": _pp("there are bilateral peripheral ground-glass opacities.",
                              "there are no bilateral opacities."),
    # viral against bacterial pneumonia: the two classes' looks against each other
    "viral": _pp("there are bilateral interstitial opacities of viral pneumonia.",
                 "there is lobar consolidation of bacterial pneumonia."),
    "viral pneumonia": _pp("there are bilateral interstitial opacities of viral pneumonia.",
                           "there is lobar consolidation of bacterial pneumonia."),
    "normal": _pp("there is no acute cardiopulmonary abnormality.", "there is an acute cardiopulmonary abnormality."),
}


def normalize_name(name: str) -> str:
    """``"Pleural_Thickening"`` -> ``"pleural thickening"``, ``"Nodule/Mass"`` -> ``"nodule mass"``."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", str(name).lower()).split())


def prompt_pair(name: str, prompts: Mapping[str, PromptPair | tuple[str, str]] | None = None) -> PromptPair:
    """The prompts of a class: ``prompts`` (by the exact or the normalised name) first, then :data:`PROMPTS`,
    then the generic ``"there is X."`` / ``"there is no X."``."""
    key = normalize_name(name)
    if not key:
        raise ValueError(f"class name {name!r} has no letters or digits: cannot write a prompt for it")
    for table in (prompts or {}, PROMPTS):
        for k in (name, key):
            if k in table:
                p = table[k]
                return p if isinstance(p, PromptPair) else PromptPair(*p)
    return PromptPair(f"there is {key}.", f"there is no {key}.")


def zero_shot_probabilities(images: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                            temperature: float) -> np.ndarray:
    """Image embeddings (N, D), positive / negative prompt embeddings (C, D) -> (N, C) probabilities:
    for every image and class, the softmax over the pair (s(v, t+), s(v, t-)), s = cos / tau."""
    if positive.shape != negative.shape or positive.ndim != 2 or images.ndim != 2 \
            or images.shape[1] != positive.shape[1]:
        raise ValueError(f"need images (N, D) and prompts (C, D) of one width, got {tuple(images.shape)}, "
                         f"{tuple(positive.shape)} and {tuple(negative.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    v = F.normalize(images.float(), dim=-1)  # (N, D)
    s_pos = v @ F.normalize(positive.float(), dim=-1).t() / temperature  # (N, C)
    s_neg = v @ F.normalize(negative.float(), dim=-1).t() / temperature  # (N, C)
    return torch.stack([s_pos, s_neg], dim=-1).softmax(-1)[..., 0].double().numpy()  # (N, C)


@dataclass
class ZeroShotResult:
    domain: str
    split: str
    classes: list[str]
    prompts: list[PromptPair]
    auc: dict[str, float]  # per class (NaN where the split has one label value only)
    mean_auc: float
    scores: np.ndarray = field(repr=False)  # (N, C) probabilities
    labels: np.ndarray = field(repr=False)  # (N, C) 0/1
    _chance: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def chance(self) -> tuple[float, float]:
        """The 95 % range of the mean AUC of random scores on this split's labels (:func:`chance_mean_auc`)."""
        if self._chance is None:
            self._chance = chance_mean_auc(self.labels)
        return self._chance

    def to_frame(self) -> pd.DataFrame:
        """One row per class: domain, class, prompts, positives, images, AUC."""
        return pd.DataFrame([{"domain": self.domain, "class": c, "positive_prompt": p.positive,
                              "negative_prompt": p.negative, "positives": int(self.labels[:, j].sum()),
                              "images": len(self.labels), "auc": self.auc[c]}
                             for j, (c, p) in enumerate(zip(self.classes, self.prompts))])


def zero_shot_domain(space, domain: str | Path, split: str = "test",
                     prompts: Mapping[str, PromptPair | tuple[str, str]] | None = None) -> ZeroShotResult:
    """Zero-shot scores and per-class AUC of a target domain's split.

    ``space``: a :class:`~refers_lite.evaluation.joint_space.JointSpace` (or anything with ``embed_images(uint8
    (N, 1, S, S)) -> (N, D)``, ``embed_texts(list[str]) -> (M, D)`` and ``temperature``)."""
    from ..data.loading.domain_dataset import DomainImages
    from .joint_space import domain_images
    ds = DomainImages(domain, split, uint8=True)
    images, labels = domain_images(ds)  # (N, 1, S, S) uint8, (N, C)
    pairs = [prompt_pair(c, prompts) for c in ds.classes]
    t = space.embed_texts([p.positive for p in pairs] + [p.negative for p in pairs])  # (2C, D)
    v = space.embed_images(images)  # (N, D)
    scores = zero_shot_probabilities(v, t[:len(pairs)], t[len(pairs):], space.temperature)
    auc = per_class_auc(labels, scores, ds.classes)
    return ZeroShotResult(ds.name, split, list(ds.classes), pairs, auc, mean_auc(auc), scores, labels)


def chance_mean_auc(labels, n: int = 200, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """What chance looks like on these test labels: the central ``level`` range of the mean AUC of ``n`` draws of
    random scores (N, C). On a small test split it is wide: a mean AUC inside it is no evidence of skill."""
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if not 0 < level < 1 or n < 2:
        raise ValueError(f"need 0 < level < 1 and n >= 2, got level={level}, n={n}")
    rng = np.random.default_rng(seed)
    draws = np.array([mean_auc(per_class_auc(y, rng.random(y.shape))) for _ in range(n)])
    draws = draws[~np.isnan(draws)]
    if not len(draws):
        return float("nan"), float("nan")
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
