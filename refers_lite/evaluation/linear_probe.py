"""Linear probe: how much does the frozen pre-trained encoder already know about a target domain?

Fine-tuning (``training/finetune.py``, the paper's protocol) changes every weight of the radiograph
transformer, so it mixes two questions: how good the pre-trained features are, and how well they
can be adapted. A linear probe answers the first alone: the encoder is frozen, each image becomes
its aggregation embedding ``z`` (the D-dimensional feature the fine-tuning head reads), and one
L2-regularised logistic regression per class is fitted on those features (scikit-learn)::

    p(class c | image) = sigmoid(w_c . standardise(z) + b_c)

at 1 %, 10 % and 100 % of the training labels (the domain's nested label-ratio subsets,
``data/label_ratios.py``), and scored by per-class test ROC-AUC (``evaluation/metrics.py``), like fine-tuning.
Every class is its own binary problem (one-vs-rest also for a multi-class domain). The
regularisation strength C is chosen from :data:`CS` on the validation split's mean AUC (ties: the
smaller C, the stronger regularisation); the test split is never used to choose anything.

A class whose training subset holds only one label value (common at 1 %) cannot be fitted: it
gets a constant score, i.e. a test AUC of 0.5, and is counted in ``constant_classes``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from .metrics import mean_auc, per_class_auc

__all__ = ["CS", "extract_features", "ProbeModel", "fit_probe", "LinearProbeResult", "linear_probe"]

CS = (0.01, 0.1, 1.0, 10.0)


@torch.no_grad()
def extract_features(encoder, dataset, augment=None, batch_size: int = 128) -> np.ndarray:
    """Frozen aggregation embeddings (N, D) of a ``DomainImages(uint8=True)`` split (central crop, eval mode)."""
    if augment is None:
        from ..config import AugmentConfig
        augment = AugmentConfig().augmenter(encoder.image_size)
    encoder.eval()
    device = next(encoder.parameters()).device
    feats = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x = augment(batch["image"].to(device), train=False)  # (b, 1, H, W) in [0, 1]
        agg, _ = encoder(x)  # (b, D)
        feats.append(agg.float().cpu().numpy())
    if not feats:
        raise ValueError(f"{dataset!r}: no images to take features of")
    return np.concatenate(feats)


@dataclass
class ProbeModel:
    """One standardiser and one logistic regression (or a constant) per class."""
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    classifiers: list  # per class: a fitted LogisticRegression, or a float (constant score)
    C: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N, C) probabilities."""
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        cols = [np.full(len(Z), clf) if isinstance(clf, float) else clf.predict_proba(Z)[:, 1]
                for clf in self.classifiers]
        return np.stack(cols, axis=1)

    @property
    def constant_classes(self) -> int:
        return sum(isinstance(c, float) for c in self.classifiers)


def _fit(Z: np.ndarray, y: np.ndarray, C: float, mean, scale) -> ProbeModel:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    classifiers = []
    for j in range(y.shape[1]):
        col = y[:, j]
        if col.min() == col.max():  # one label value in the subset: nothing to separate
            classifiers.append(float(col[0]))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            classifiers.append(LogisticRegression(C=C, max_iter=2000).fit(Z, col.astype(np.int64)))
    return ProbeModel(mean, scale, classifiers, C)


def fit_probe(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray | None = None,
              y_val: np.ndarray | None = None, Cs: Sequence[float] = CS) -> tuple[ProbeModel, float]:
    """Fit the per-class logistic regressions; choose C on the validation mean AUC.

    Returns (model, its validation mean AUC (NaN without validation data or defined AUCs)). Without
    validation data, or when no C gives a defined AUC, C = 1."""
    X = np.asarray(X_train, dtype=np.float64)
    y = np.asarray(y_train)
    if y.ndim == 1:
        y = y[:, None]
    if X.ndim != 2 or len(X) != len(y) or len(X) == 0:
        raise ValueError(f"need features (N, D) and labels (N, C) with the same N >= 1, got {X.shape} and {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    Cs = sorted(float(c) for c in Cs)
    if not Cs or min(Cs) <= 0:
        raise ValueError(f"Cs must be positive numbers, got {Cs}")
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale == 0] = 1.0
    Z = (X - mean) / scale
    if X_val is None or y_val is None or len(X_val) == 0:
        return _fit(Z, y, 1.0, mean, scale), float("nan")
    best, best_auc = None, -math.inf
    for C in Cs:  # ascending: on a tie the smaller C (stronger regularisation) stays
        model = _fit(Z, y, C, mean, scale)
        auc = mean_auc(per_class_auc(y_val, model.predict(X_val)))
        if not math.isnan(auc) and auc > best_auc:
            best, best_auc = model, auc
    if best is None:
        return _fit(Z, y, 1.0, mean, scale), float("nan")
    return best, best_auc


@dataclass
class LinearProbeResult:
    domain: str
    classes: list[str]
    rows: list[dict] = field(default_factory=list)  # one per (ratio, seed)

    def to_frame(self) -> pd.DataFrame:
        """One row per ratio, seed and class: n_train, C, val_mean_auc, constant_classes, auc, mean_auc."""
        out = []
        for r in self.rows:
            base = {k: v for k, v in r.items() if k != "auc"}
            out += [{"domain": self.domain, **base, "class": c, "auc": r["auc"][c]} for c in self.classes]
        return pd.DataFrame(out)

    def summary(self) -> pd.DataFrame:
        """Mean test AUC over seeds per ratio (and its sample std, 0 for one seed)."""
        df = pd.DataFrame([{"ratio": r["ratio"], "seed": r["seed"], "mean_auc": r["mean_auc"]} for r in self.rows])
        g = df.groupby("ratio")["mean_auc"]
        return pd.DataFrame({"domain": self.domain, "mean_auc": g.mean(), "std": g.std(ddof=1).fillna(0.0),
                             "seeds": g.count()}).reset_index()


def linear_probe(encoder, domain: str | Path, ratios: Sequence[float] = (0.01, 0.1, 1.0), seeds: Sequence[int] = (0,),
                 Cs: Sequence[float] = CS, augment=None, batch_size: int = 128) -> LinearProbeResult:
    """Linear probe of a frozen ``encoder`` (a radiograph transformer: ``encoder(x) -> (agg (B, D), patches)``,
    or the path of an exported encoder file) on a target domain folder, at each label ratio and seed.

    Features are taken once per split (the 100 % training subset is the whole training split);
    the ratio subsets index into them."""
    from ..data.loading.domain_dataset import DomainImages
    if isinstance(encoder, (str, Path)):
        from ..training.checkpoint import load_image_encoder
        encoder = load_image_encoder(encoder)
    full = DomainImages(domain, "train", ratio=1.0, seed=0, uint8=True)
    val = DomainImages(domain, "validation", uint8=True)
    test = DomainImages(domain, "test", uint8=True)
    feats = {name: extract_features(encoder, ds, augment, batch_size) for name, ds in
             (("train", full), ("validation", val), ("test", test)) if len(ds)}
    if "train" not in feats or "test" not in feats:
        raise ValueError(f"{domain}: a linear probe needs training and test images")
    row_of = {i: k for k, i in enumerate(full.image_ids)}
    y_full = full.labels_matrix()
    result = LinearProbeResult(full.name, list(full.classes))
    for ratio in ratios:
        for seed in seeds:
            sub = DomainImages(domain, "train", ratio=ratio, seed=seed, uint8=True)
            idx = np.array([row_of[i] for i in sub.image_ids], dtype=np.int64)
            model, val_auc = fit_probe(feats["train"][idx], y_full[idx], feats.get("validation"),
                                       val.labels_matrix() if len(val) else None, Cs)
            auc = per_class_auc(test.labels_matrix(), model.predict(feats["test"]), full.classes)
            result.rows.append({"ratio": float(ratio), "seed": int(seed), "n_train": len(idx), "C": model.C,
                                "val_mean_auc": val_auc, "constant_classes": model.constant_classes,
                                "auc": auc, "mean_auc": mean_auc(auc)})
    return result
