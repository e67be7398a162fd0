"""Linear probes (refers_lite.evaluation.linear_probe): separable toy features, constant classes, the choice of C on
validation, and a probe of a frozen toy encoder on a small domain at its label-ratio subsets."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from refers_lite.data.loading.domain_dataset import DomainImages
from refers_lite.evaluation.linear_probe import extract_features, fit_probe, linear_probe
from refers_lite.evaluation.metrics import per_class_auc
from test_finetune import _domain


def _toy(n, rng, shift=2.0):
    y = rng.integers(0, 2, (n, 2))  # (n, 2) two independent classes
    X = rng.standard_normal((n, 6))  # (n, 6): dimension 0 carries class 0, dimension 3 class 1
    X[:, 0] += shift * y[:, 0]
    X[:, 3] -= shift * y[:, 1]
    return X, y


def test_separable_features_give_a_perfect_probe_and_noise_does_not():
    rng = np.random.default_rng(0)
    X, y = _toy(200, rng, shift=8.0)
    Xv, yv = _toy(60, rng, shift=8.0)
    Xt, yt = _toy(100, rng, shift=8.0)
    model, val_auc = fit_probe(X, y, Xv, yv)
    assert val_auc == pytest.approx(1.0) and model.constant_classes == 0
    assert per_class_auc(yt, model.predict(Xt)) == {"class_0": 1.0, "class_1": 1.0}
    # features that carry nothing about the labels: near chance on test
    (Xn, yn), (Xnv, ynv), (Xnt, ynt) = (_toy(n, rng, shift=0.0) for n in (200, 60, 100))
    noise, _ = fit_probe(Xn, yn, Xnv, ynv)
    aucs = per_class_auc(ynt, noise.predict(Xnt))
    assert all(abs(a - 0.5) < 0.2 for a in aucs.values()), aucs


def test_c_is_chosen_on_validation_and_a_one_valued_class_gets_a_constant_score():
    rng = np.random.default_rng(1)
    X, y = _toy(40, rng, shift=1.0)
    Xv, yv = _toy(200, rng, shift=1.0)
    model, val_auc = fit_probe(X, y, Xv, yv, Cs=(10.0, 0.001))
    scores = {C: fit_probe(X, y, Xv, yv, Cs=(C,))[1] for C in (0.001, 10.0)}
    assert model.C == max(scores, key=scores.get) and val_auc == pytest.approx(max(scores.values()))
    y1 = y.copy()
    y1[:, 1] = 1  # every training image positive: nothing to fit
    m1, _ = fit_probe(X, y1, Xv, yv)
    p = m1.predict(Xv)
    assert m1.constant_classes == 1 and np.all(p[:, 1] == 1.0)
    assert per_class_auc(yv, p)["class_1"] == 0.5
    assert math.isnan(fit_probe(X, y)[1]) and fit_probe(X, y)[0].C == 1.0  # no validation data: C = 1
    with pytest.raises(ValueError, match="0/1"):
        fit_probe(X, y * 2)


class _PixelEncoder(nn.Module):
    """A frozen 'encoder' whose two features are the brightest and the darkest pixel: a blob (bright square)
    and a stripe (dark band) are linearly separable in them."""
    image_size = 40

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):  # (B, 1, H, W) in [0, 1]
        flat = x.flatten(1)
        return torch.stack([flat.amax(1), flat.amin(1)], dim=1), None  # (B, 2)


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    return _domain(tmp_path_factory.mktemp("probe") / "dom")


def test_a_probe_of_a_frozen_encoder_on_the_label_ratio_subsets(domain):
    enc = _PixelEncoder()
    feats = extract_features(enc, DomainImages(domain, "test", uint8=True), batch_size=7)
    assert feats.shape == (len(DomainImages(domain, "test")), 2)
    res = linear_probe(enc, domain, ratios=(0.01, 0.1, 1.0), seeds=(0, 1))
    assert [(r["ratio"], r["seed"]) for r in res.rows] == [(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1), (1.0, 0), (1.0, 1)]
    for r in res.rows:  # the subsets are the domain's own ratio files
        assert r["n_train"] == len(DomainImages(domain, "train", ratio=r["ratio"], seed=r["seed"]))
    full = [r for r in res.rows if r["ratio"] == 1.0]
    assert all(r["auc"] == {"blob": 1.0, "stripe": 1.0} and r["constant_classes"] == 0 for r in full)
    frame = res.to_frame()
    assert len(frame) == 6 * 2 and set(frame["class"]) == {"blob", "stripe"}
    summary = res.summary()
    assert summary["ratio"].tolist() == [0.01, 0.1, 1.0] and summary["seeds"].tolist() == [2, 2, 2]
    assert summary.loc[summary["ratio"] == 1.0, "mean_auc"].item() == 1.0
