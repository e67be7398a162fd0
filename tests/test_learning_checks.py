import math

import numpy as np
import pandas as pd
import pytest
import torch

from refers_lite.config import get_config
from refers_lite.data.loading.source_studies import SourceStudies, write_placeholder_source
from refers_lite.training.learning_checks import (consistency_chance, mean_pairwise_cosine, source_probe,
                                                  study_report_checks)
from refers_lite.models import REFERS
from refers_lite.evaluation.retrieval import distinct_report_recall


def test_mean_pairwise_cosine_matches_the_matrix():
    torch.manual_seed(0)
    x = torch.randn(7, 5)
    z = torch.nn.functional.normalize(x, dim=-1)
    s = z @ z.T
    want = (s.sum() - s.diagonal().sum()) / (7 * 6)
    assert mean_pairwise_cosine(x) == pytest.approx(float(want), rel=1e-6)
    assert mean_pairwise_cosine(torch.ones(4, 3) + 1e-9) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_cosine(torch.ones(1, 3))


def test_consistency_chance_is_ln_b_weighted():
    assert consistency_chance(32, 16) == pytest.approx(math.log(16))
    assert consistency_chance(20, 16) == pytest.approx((16 * math.log(16) + 4 * math.log(4)) / 20)
    assert consistency_chance(17, 16) == pytest.approx(math.log(16))  # a last batch of one is skipped


def test_distinct_report_recall_counts_same_text_as_a_hit():
    texts = ["normal", "effusion", "normal", "nodule"]
    sim = np.array([[0.0, 0.0, 9.0, 0.0],  # study 0 ranks report 2 first: the same text as its own -> a hit
                    [9.0, 0.0, 0.0, 1.0],  # study 1 ("effusion") ranks it below "normal" and "nodule"
                    [0.0, 0.0, 0.0, 9.0],
                    [0.0, 0.0, 0.0, 9.0]])
    rec, distinct = distinct_report_recall(sim, texts, (1, 2))
    assert distinct == 3
    assert rec[1] == pytest.approx(2 / 4)  # studies 0 and 3
    # study 1: "normal" 9 > "nodule" 1 > "effusion" 0 -> rank 3; study 2 ties "normal" with "effusion" at 0
    # below "nodule": rank 2 or 3 -> 1/2 in expectation at K = 2
    assert rec[2] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    with pytest.raises(ValueError, match="square"):
        distinct_report_recall(sim[:3], texts, (1,))


@pytest.fixture
def source_with_findings(tmp_path):
    root = write_placeholder_source(tmp_path / "source", n_studies=60, image_size=32, seed=3)
    df = pd.read_csv(root / "studies.csv", dtype=str, keep_default_na=False)
    df["findings"] = ["cardiomegaly;nodule" if i % 3 == 0 else ("nodule" if i % 3 == 1 else "")
                      for i in range(len(df))]
    df.to_csv(root / "studies.csv", index=False)
    return root


def test_rendered_findings_matrix(source_with_findings):
    ds = SourceStudies(source_with_findings, None)
    names, y = ds.rendered_findings()
    assert names == ["cardiomegaly", "nodule"]
    assert y.shape == (60, 2) and y[0].tolist() == [1, 1] and y[1].tolist() == [0, 1] and y[2].tolist() == [0, 0]


def test_common_part_tells_an_offset_from_a_collapse():
    from refers_lite.training.learning_checks import common_part
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(200, 64, generator=g, dtype=torch.float64)  # no offset, 64 directions
    offset = spread * 0.1 + 5.0  # the same rows on a large common vector
    assert mean_pairwise_cosine(offset) > 0.99  # the plain cosine calls it a collapse
    a, b = common_part(spread), common_part(offset)
    assert a["common share"] < 0.05 and b["common share"] > 0.99
    assert a["effective rank"] > 50 and b["effective rank"] == pytest.approx(a["effective rank"])  # same spread
    line = torch.randn(200, 1, generator=g, dtype=torch.float64) * torch.randn(1, 64, generator=g,
                                                                              dtype=torch.float64)
    assert common_part(line + 5.0)["effective rank"] == pytest.approx(1.0, abs=1e-6)  # rows differ along one line
    same = torch.ones(5, 3)  # every row the very same vector
    assert common_part(same)["common share"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        common_part(torch.ones(1, 3))


def test_checks_run_on_a_model_and_stay_in_range(source_with_findings):
    cfg = get_config("smoke", {"model": {"image_size": 32, "study_projection": "mlp"}})
    torch.manual_seed(0)
    model = REFERS.from_config(cfg).eval()
    val = SourceStudies(source_with_findings, "validation", max_report_len=cfg.model.max_report_len)
    out = study_report_checks(model, cfg, val, k=2)
    assert 0 <= out["R@2"] <= 1 and out["R@2 chance"] == pytest.approx(2 / out["distinct reports"])
    assert -1 <= out["cosine v"] <= 1 and -1 <= out["cosine joint"] <= 1
    assert 0 <= out["R@2 v"] <= 1 and 0 <= out["common share v"] <= 1 and out["effective rank v"] >= 1
    probe = source_probe(model.encoder, source_with_findings, 32, split="test")
    assert set(probe["findings"]) <= {"cardiomegaly", "nodule"}
    assert all(0 <= a <= 1 or math.isnan(a) for a in probe["per finding"].values())
