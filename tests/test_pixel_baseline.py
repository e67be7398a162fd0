"""The pixel reference (refers_lite.baselines.pixels) on the toy domain of test_finetune."""
import numpy as np
import pytest

from refers_lite.baselines.pixels import pixel_features, pixel_logistic_regression
from refers_lite.data.loading.domain_dataset import DomainImages
from test_finetune import CLASSES, _domain


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    return _domain(tmp_path_factory.mktemp("px") / "dom")


def test_features_are_downsampled_pixels_in_unit_range(domain):
    x, y = pixel_features(DomainImages(domain, "test", uint8=True), size=8)
    assert x.shape[1] == 64 and 0.0 <= x.min() and x.max() <= 1.0 and y.shape == (len(x), len(CLASSES))


def test_the_stripe_is_visible_to_a_linear_model_and_shuffled_labels_are_not(domain, monkeypatch):
    res = pixel_logistic_regression(domain, 1.0, 0, size=20)
    assert set(res["test_auc"]) == set(CLASSES) and res["n_train"] > 0 and res["n_test"] > 0
    # a full-height dark band moves a whole column of pixels: linear in the pixels
    assert res["test_auc"]["stripe"] > 0.9, res
    # the same learner with the training labels shuffled is at chance: the AUC comes from the pixels
    real = pixel_features
    rng = np.random.default_rng(0)

    def shuffled(ds, size=32, batch=256):
        x, y = real(ds, size, batch)
        return (x, y[rng.permutation(len(y))]) if ds.split == "train" else (x, y)

    monkeypatch.setattr("refers_lite.baselines.pixels.pixel_features", shuffled)
    null = pixel_logistic_regression(domain, 1.0, 0, size=20)
    assert abs(null["test_auc"]["stripe"] - 0.5) < 0.2 and null["test_mean_auc"] < res["test_mean_auc"] - 0.2


def test_bad_size_is_a_clear_error(domain):
    with pytest.raises(ValueError, match="size"):
        pixel_logistic_regression(domain, size=2)
