"""A reference, not a method of the paper: logistic regression on the raw pixels of a target domain.

It answers "how much of the task is visible in the films at all, to the simplest learner?". Every
image is area-downsampled to ``size`` x ``size`` and standardised (statistics of the training
subset); one L2-regularised logistic regression per class (scikit-learn) is fitted on the training
subset of the (ratio, seed) and scored on the test split with the same ROC-AUC as fine-tuning
(:func:`refers_lite.evaluation.metrics.per_class_auc`). The rendered films share one CT and are globally aligned,
so a linear model on pixels is a strong reference for large findings (effusion, emphysema, edema,
cardiomegaly) and a weak one for small, movable ones (nodules).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loading.domain_dataset import DomainImages
from ..evaluation.metrics import mean_auc, per_class_auc


def pixel_features(dataset: DomainImages, size: int = 32, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(N, size*size) pixels in [0, 1] and (N, C) labels of a domain split."""
    feats, labels = [], []
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        images = torch.stack([it["image"] for it in items]).float()  # (b, 1, H, W)
        if images.max() > 1.0:  # uint8 pixels
            images = images / 255.0
        feats.append(F.interpolate(images, size=(size, size), mode="area").flatten(1).numpy())  # (b, size*size)
        labels.append(np.stack([it["labels"].numpy() for it in items]))
    return np.concatenate(feats), np.concatenate(labels)


def pixel_logistic_regression(domain: str | Path, ratio: float = 1.0, seed: int = 0, size: int = 32,
                              C: float = 0.01) -> dict:
    """Per-class test AUC of the pixel reference on a domain's (ratio, seed) training subset."""
    from sklearn.linear_model import LogisticRegression

    if size < 4:
        raise ValueError(f"size must be at least 4 pixels, got {size}")
    train = DomainImages(domain, "train", ratio=ratio, seed=seed, uint8=True)
    test = DomainImages(domain, "test", uint8=True)
    x_tr, y_tr = pixel_features(train, size)
    x_te, y_te = pixel_features(test, size)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    scores = np.zeros_like(y_te, dtype=np.float64)  # (N_test, C)
    for c in range(y_tr.shape[1]):
        if y_tr[:, c].min() == y_tr[:, c].max():  # one value in training: no classifier, a constant score
            continue
        clf = LogisticRegression(C=C, max_iter=500).fit(x_tr, y_tr[:, c])
        scores[:, c] = clf.decision_function(x_te)
    auc = per_class_auc(y_te, scores, train.classes)
    return {"test_auc": auc, "test_mean_auc": mean_auc(auc), "n_train": len(train), "n_test": len(test),
            "size": size, "ratio": ratio, "seed": seed}
