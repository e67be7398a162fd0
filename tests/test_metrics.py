"""refers_lite.evaluation.metrics: per-class AUC, mean AUC, seed summaries and the paper's t-test.

Every expected value here is computed by hand (pair counting for AUCs, the pooled-variance
formula for the t-test), not by calling the library the module wraps.
"""

from __future__ import annotations

import math
import statistics
import warnings

import numpy as np
import pytest
from scipy import stats

from refers_lite.evaluation.metrics import (
    SeedSummary,
    compare_to_best_baseline,
    mean_auc,
    per_class_auc,
    summarize_seeds,
    t_test,
)


# --------------------------------------------------------------------------- per_class_auc


def test_perfect_reversed_and_tied_rankings():
    y = [0, 0, 1, 1]
    assert per_class_auc(y, [0.1, 0.2, 0.3, 0.4]) == {"class_0": 1.0}
    assert per_class_auc(y, [0.4, 0.3, 0.2, 0.1]) == {"class_0": 0.0}
    assert per_class_auc(y, [0.5, 0.5, 0.5, 0.5]) == {"class_0": 0.5}


def test_hand_computed_auc():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of the 4 pairs ranked right
    assert per_class_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["class_0"] == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert per_class_auc([0, 0, 1], [0.2, 0.5, 0.5])["class_0"] == pytest.approx(0.75)


def test_logits_and_probabilities_give_the_same_auc():
    y = np.array([0, 1, 0, 1, 0, 1])
    logits = np.array([-2.0, 0.3, 0.1, 3.0, -0.5, -0.1])
    probs = 1.0 / (1.0 + np.exp(-logits))
    assert per_class_auc(y, logits) == per_class_auc(y, probs)


def _multilabel():
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    c = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.3])
    labels = np.array(
        [
            [1, 1, 1, 0, 0, 0],  # perfect
            [0, 0, 0, 1, 1, 1],  # reversed
            [0, 1, 0, 1, 0, 1],  # positives 0.4, 0.8, 0.3 vs negatives 0.1, 0.35, 0.2: 8 of 9 pairs
            [0, 0, 0, 0, 0, 0],  # no positive: no AUC
            [1, 1, 1, 1, 1, 1],  # no negative: no AUC
        ]
    ).T
    scores = np.stack([s, s, c, s, c], axis=1)
    return labels, scores


def test_multilabel_per_class_with_names_and_undefined_classes():
    labels, scores = _multilabel()
    names = ["Atelectasis", "Cardiomegaly", "Effusion", "Hernia", "NoFinding"]
    auc = per_class_auc(labels, scores, class_names=names)
    assert list(auc) == names
    assert auc["Atelectasis"] == pytest.approx(1.0)
    assert auc["Cardiomegaly"] == pytest.approx(0.0)
    assert auc["Effusion"] == pytest.approx(8 / 9)
    assert math.isnan(auc["Hernia"]) and math.isnan(auc["NoFinding"])
    assert mean_auc(auc) == pytest.approx((1.0 + 0.0 + 8 / 9) / 3)


def test_default_names_bool_labels_and_torch_tensors():
    torch = pytest.importorskip("torch")
    labels, scores = _multilabel()
    ref = per_class_auc(labels, scores)
    assert list(ref) == [f"class_{j}" for j in range(5)]
    got = per_class_auc(torch.tensor(labels.astype(bool)), torch.tensor(scores, dtype=torch.bfloat16))
    assert got.keys() == ref.keys()
    for k in ref:
        assert (math.isnan(got[k]) and math.isnan(ref[k])) or got[k] == pytest.approx(ref[k])


def test_binary_1d_input_is_one_class():
    auc = per_class_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), class_names=["TB"])
    assert auc == {"TB": pytest.approx(0.75)}
    # (N,) and (N, 1) are the same task
    assert per_class_auc([[0], [0], [1], [1]], [0.1, 0.4, 0.35, 0.8]) == {"class_0": pytest.approx(0.75)}


def test_constant_binary_task_is_nan_without_warning(recwarn):
    auc = per_class_auc([1, 1, 1], [0.2, 0.9, 0.4])
    assert math.isnan(auc["class_0"])
    assert math.isnan(mean_auc(auc))
    assert not recwarn.list


def test_mean_auc_ignores_nan_and_is_nan_when_nothing_defined():
    assert mean_auc({"a": 0.8, "b": float("nan"), "c": 0.6}) == pytest.approx(0.7)
    assert math.isnan(mean_auc({"a": float("nan")}))
    assert math.isnan(mean_auc({}))


@pytest.mark.parametrize(
    "labels, scores, kwargs, match",
    [
        ([0, 1, 1], [0.1, 0.2], {}, r"same shape.*\(3,\).*\(2,\)"),
        (np.zeros((4, 2)), np.zeros((4, 3)), {}, r"same shape.*\(4, 2\).*\(4, 3\)"),
        ([0, 1, 2], [0.1, 0.2, 0.3], {}, r"0/1.*\(3,\)"),
        ([0, 1, -1], [0.1, 0.2, 0.3], {}, r"0/1"),
        ([0, 1, float("nan")], [0.1, 0.2, 0.3], {}, r"0/1"),
        ([0, 1, 1], [0.1, float("nan"), 0.3], {}, r"finite.*NaN.*\(3,\)"),
        ([0, 1, 1], [0.1, float("inf"), 0.3], {}, r"finite"),
        ([], [], {}, r"empty.*\(0,\)"),
        (np.zeros((3, 0)), np.zeros((3, 0)), {}, r"empty.*\(3, 0\)"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), {}, r"\(N,\) or \(N, C\).*\(2, 2, 2\)"),
        (np.eye(3), np.eye(3), {"class_names": ["a", "b"]}, r"2 name.*3 class"),
        (np.eye(3), np.eye(3), {"class_names": ["a", "b", "a"]}, r"unique"),
        (["no", "yes"], [0.1, 0.2], {}, r"labels must be numeric"),
    ],
)
def test_per_class_auc_errors(labels, scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        per_class_auc(labels, scores, **kwargs)


# ------------------------------------------------------------------------ summarize_seeds


def test_summarize_three_seeds():
    s = summarize_seeds([0.80, 0.82, 0.84])
    assert isinstance(s, SeedSummary)
    assert s.mean == pytest.approx(0.82)
    assert s.std == pytest.approx(0.02)  # sample std (ddof=1); the population std would be 0.0163
    assert s.n == 3 and s.values == (0.80, 0.82, 0.84)
    assert s.format() == "82.0 ± 2.0"
    assert str(s) == "82.0 ± 2.0"
    assert s.format(percent=False) == "0.820 ± 0.020"
    assert s.format(decimals=2) == "82.00 ± 2.00"


def test_summarize_one_seed_and_bad_input():
    s = summarize_seeds([0.836])
    assert s.std == 0.0 and s.n == 1
    assert s.format() == "83.6 ± 0.0"
    with pytest.raises(ValueError, match="at least one"):
        summarize_seeds([])
    with pytest.raises(ValueError, match="finite"):
        summarize_seeds([0.8, float("nan")])


# -------------------------------------------------------------------------------- t_test


def _pooled_p(a, b):
    """Student's two-sample t-test from its formula: pooled variance, then the t tail."""
    na, nb = len(a), len(b)
    sp2 = ((na - 1) * statistics.variance(a) + (nb - 1) * statistics.variance(b)) / (na + nb - 2)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(sp2 * (1 / na + 1 / nb))
    return 2 * stats.t.sf(abs(t), na + nb - 2)


def test_t_test_matches_pooled_formula():
    a, b = [0.80, 0.81, 0.82], [0.70, 0.72, 0.71]
    # t = 0.1 / (0.01 * sqrt(2/3)) = 12.247, 4 degrees of freedom
    expected = _pooled_p(a, b)
    assert expected == pytest.approx(2 * stats.t.sf(0.1 / (0.01 * math.sqrt(2 / 3)), 4))
    assert t_test(a, b) == pytest.approx(expected, rel=1e-9)
    assert t_test(a, b) == pytest.approx(2.552e-4, rel=1e-3)
    assert t_test(b, a) == pytest.approx(expected, rel=1e-9)  # two-sided


def test_t_test_is_student_not_welch():
    # unequal sizes and variances: the pooled and the Welch p-values differ clearly
    a, b = [0.80, 0.85, 0.90, 0.95], [0.70, 0.71]
    pooled = _pooled_p(a, b)
    welch = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert abs(pooled - welch) > 0.01
    assert t_test(a, b) == pytest.approx(pooled, rel=1e-9)


def test_t_test_degenerate_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these may warn
        assert t_test([0.8, 0.8, 0.8], [0.7, 0.7, 0.7]) == 0.0  # zero variance, different means
        assert t_test([1, 1, 1], [2, 2, 2]) == 0.0
        assert math.isnan(t_test([0.8, 0.8, 0.8], [0.8, 0.8, 0.8]))  # zero variance, same means
        assert math.isnan(t_test([0.8], [0.7, 0.71]))  # fewer than 2 on one side
        assert math.isnan(t_test([0.8, 0.81], []))
        # one constant side is an ordinary test
        a, b = [0.8, 0.8, 0.8], [0.70, 0.72, 0.71]
        assert t_test(a, b) == pytest.approx(_pooled_p(a, b), rel=1e-9)
        with pytest.raises(ValueError, match="finite"):
            t_test([0.8, float("nan")], [0.7, 0.71])


# --------------------------------------------------------------- compare_to_best_baseline

RESULTS = {
    "REFERS": [0.83, 0.84, 0.835],
    "C2L": [0.80, 0.81, 0.79],  # mean 0.800
    "MoCo": [0.78, 0.90, 0.70],  # highest single run, mean 0.793
    "ImageNet": [0.805, 0.80, 0.81],  # mean 0.805: the best baseline
}


def test_compare_picks_highest_mean_baseline():
    out = compare_to_best_baseline(RESULTS, "REFERS", ["C2L", "MoCo", "ImageNet"])
    assert out["best_baseline"] == "ImageNet"
    assert out["method_mean"] == pytest.approx(0.835)
    assert out["baseline_mean"] == pytest.approx(0.805)
    assert out["p_value"] == pytest.approx(_pooled_p(RESULTS["REFERS"], RESULTS["ImageNet"]), rel=1e-9)
    assert set(out) == {"best_baseline", "method_mean", "baseline_mean", "p_value"}
    # only the named baselines compete
    assert compare_to_best_baseline(RESULTS, "REFERS", ["C2L", "MoCo"])["best_baseline"] == "C2L"


def test_compare_ties_go_to_the_first_listed():
    res = {"M": [0.9, 0.91], "A": [0.8, 0.82], "B": [0.82, 0.8]}
    assert compare_to_best_baseline(res, "M", ["B", "A"])["best_baseline"] == "B"
    assert compare_to_best_baseline(res, "M", ["A", "B"])["best_baseline"] == "A"


@pytest.mark.parametrize(
    "method, baselines, match",
    [
        ("LSP", ["C2L"], r"method 'LSP' is not in results"),
        ("REFERS", ["C2L", "SimCLR"], r"\['SimCLR'\] not in results"),
        ("REFERS", [], r"baselines is empty"),
        ("REFERS", ["C2L", "REFERS"], r"also listed as a baseline"),
        ("REFERS", "C2L", r"list of names"),
    ],
)
def test_compare_errors(method, baselines, match):
    with pytest.raises(ValueError, match=match):
        compare_to_best_baseline(RESULTS, method, baselines)
