"""Evaluation metrics as the REFERS paper reports them (Zhou et al., 2022).

The paper (Nature Machine Intelligence 4, 32-40, "Generalized radiograph representation
learning via cross-supervision between images and free-text radiology reports") evaluates
every fine-tuned model the same way:

* **Per-class ROC-AUC on the test split.** "The evaluation metric is Area under the ROC
  Curve (AUC)" (Tables 1 and 2); NIH ChestX-ray has 14 classes, VinBigData several, the
  Shenzhen and COVID-19 tasks are binary. :func:`per_class_auc` computes one AUC per class
  with scikit-learn's :func:`~sklearn.metrics.roc_auc_score`; scores may be probabilities
  or logits, since AUC only depends on the ranking.
* **Mean AUC over classes** ("mean class AUCs"): :func:`mean_auc`. A class whose test
  labels are all one value has no ROC curve, so no AUC; it is reported as NaN and left
  out of the mean (small label ratios and small test splits make this happen).
* **Three repeats.** "we independently repeat each experiment three times and report their
  average results"; :func:`summarize_seeds` gives the mean over seeds and, which the paper
  does not print but we add, the sample standard deviation (``ddof=1``).
  :meth:`SeedSummary.format` prints it the way the tables do, AUC x 100 with one decimal
  ("83.6 ± 0.4").
* **Significance.** "we calculate p-values between mean class AUCs of our REFERS and the
  best performing baseline model according to their fine-tuned performance using
  independent two-sample t-test": :func:`t_test` (scipy's
  :func:`~scipy.stats.ttest_ind`, Student's pooled-variance test, two-sided) on the
  per-seed mean AUCs, and :func:`compare_to_best_baseline`, which picks the baseline with
  the highest mean over seeds and tests the method against it.

No bootstrap: the paper's uncertainty is across seeds only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "per_class_auc",
    "mean_auc",
    "SeedSummary",
    "summarize_seeds",
    "t_test",
    "compare_to_best_baseline",
]


def _to_numpy(x, name: str) -> np.ndarray:
    """An array from a list, numpy array or (CPU/GPU, any dtype) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().float().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}: {e}") from e
    return arr


def _as_2d(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 1:
        return arr.reshape(-1, 1)
    if arr.ndim == 2:
        return arr
    raise ValueError(f"{name} must be (N,) or (N, C), got shape {arr.shape}")


def per_class_auc(labels, scores, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """ROC-AUC of every class on one test split.

    Args:
        labels: (N, C) array of 0/1 (bool, int or float), or (N,) for a binary task,
            which is treated as C = 1.
        scores: the same shape as ``labels`` ((N,) and (N, 1) are interchangeable):
            probabilities, logits or any score that increases with the class's likelihood.
            Must be finite.
        class_names: C names, the keys of the result; default ``class_0 .. class_{C-1}``.

    Returns:
        ``{name: auc}`` in class order. A class whose labels in this split are all 0 or all
        1 has no AUC: its value is ``float("nan")`` (no warning, no exception).

    Raises:
        ValueError: empty input, shapes that differ or are not 1-D/2-D, labels other than
            0/1, non-finite scores, or ``class_names`` of the wrong length or with repeats.
    """
    from sklearn.metrics import roc_auc_score  # scikit-learn: the only user of it here

    y_raw = _to_numpy(labels, "labels")
    s_raw = _to_numpy(scores, "scores")
    y = _as_2d(y_raw, "labels")
    s = _as_2d(s_raw, "scores")
    if y.shape != s.shape:
        raise ValueError(
            f"labels and scores must have the same shape, got labels {y_raw.shape} and scores {s_raw.shape}"
        )
    n, c = y.shape
    if n == 0 or c == 0:
        raise ValueError(f"empty input: labels and scores have shape {y_raw.shape} (need N >= 1 and C >= 1)")
    bad = ~((y == 0) | (y == 1))  # also catches NaN labels
    if bad.any():
        examples = np.unique(y[bad])[:5].tolist()
        raise ValueError(
            f"labels must be 0/1, found {int(bad.sum())} other value(s) in labels of shape {y_raw.shape}, "
            f"e.g. {examples}"
        )
    nonfinite = ~np.isfinite(s)
    if nonfinite.any():
        rows, cols = np.nonzero(nonfinite)
        raise ValueError(
            f"scores must be finite, found {int(nonfinite.sum())} NaN/inf value(s) in scores of shape "
            f"{s_raw.shape} (first at row {rows[0]}, class {cols[0]})"
        )
    if class_names is None:
        names = [f"class_{j}" for j in range(c)]
    else:
        names = [str(x) for x in class_names]
        if len(names) != c:
            raise ValueError(f"class_names has {len(names)} name(s) but labels of shape {y_raw.shape} have {c} class(es)")
        if len(set(names)) != c:
            raise ValueError(f"class_names must be unique, got {names}")

    out: dict[str, float] = {}
    for j, name in enumerate(names):
        col = y[:, j]
        if col.min() == col.max():  # one value only: no positives or no negatives, AUC undefined
            out[name] = float("nan")
        else:
            out[name] = float(roc_auc_score(col.astype(np.int64), s[:, j]))
    return out


def mean_auc(per_class: Mapping[str, float]) -> float:
    """Mean of the defined (non-NaN) per-class AUCs; NaN when no class has an AUC."""
    vals = [float(v) for v in per_class.values() if not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else float("nan")


def _finite_1d(values, name: str) -> np.ndarray:
    arr = _to_numpy(values, name)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


@dataclass(frozen=True)
class SeedSummary:
    """One result over repeated runs (seeds): mean, sample std (ddof=1; 0.0 for one run)."""

    mean: float
    std: float
    n: int
    values: tuple[float, ...]

    def format(self, percent: bool = True, decimals: int | None = None) -> str:
        """``"82.0 ± 2.0"``: AUCs in [0, 1] as percent (the paper's tables) with 1 decimal;
        ``percent=False`` prints the raw values, 3 decimals unless ``decimals`` is given."""
        scale = 100.0 if percent else 1.0
        d = (1 if percent else 3) if decimals is None else decimals
        return f"{self.mean * scale:.{d}f} ± {self.std * scale:.{d}f}"

    def __str__(self) -> str:
        return self.format()


def summarize_seeds(values: Sequence[float]) -> SeedSummary:
    """Mean and sample standard deviation (``ddof=1``) of one metric over seeds.

    With a single value the std is 0.0 (not NaN). Raises ValueError for no values or
    non-finite ones (a NaN mean AUC means no class of that run had an AUC).
    """
    arr = _finite_1d(values, "values")
    if arr.size == 0:
        raise ValueError("summarize_seeds needs at least one value, got none")
    std = float(np.std(arr, ddof=1)) if arr.size >= 2 else 0.0
    return SeedSummary(mean=float(np.mean(arr)), std=std, n=int(arr.size), values=tuple(float(v) for v in arr))


def t_test(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the independent two-sample t-test (Student, pooled variance).

    ``scipy.stats.ttest_ind(a, b, equal_var=True)``, as in the paper, where ``a`` and ``b``
    are the per-seed mean class AUCs of two methods.

    Degenerate cases, decided here rather than left to floating point:

    * fewer than 2 values on either side: NaN (no variance estimate);
    * both sides constant (zero variance): the t statistic is d/0. Equal means give NaN
      (scipy: 0/0, NaN). Different means give 0.0: scipy returns t = ±inf, p = 0 only when
      the floating-point variance comes out exactly 0 (e.g. [1, 1, 1] vs [2, 2, 2]); for
      values such as [0.8, 0.8, 0.8] the mean is off by one ulp, the variance is ~1e-33 and
      scipy gives a huge finite t and a tiny p that depends on rounding (and a
      catastrophic-cancellation warning). We return exactly 0.0 for every such case.

    One constant side and one varying side is an ordinary test (the pooled variance is > 0;
    scipy's precision-loss warning for the constant side is silenced).
    """
    from scipy.stats import ttest_ind

    x = _finite_1d(a, "a")
    y = _finite_1d(b, "b")
    if x.size < 2 or y.size < 2:
        return float("nan")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return float("nan") if x[0] == y[0] else 0.0
    with warnings.catch_warnings():
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            # an exactly constant side is fine here (the other side's variance carries the
            # pooled estimate); scipy still warns about "catastrophic cancellation" for it
            warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        return float(ttest_ind(x, y, equal_var=True).pvalue)


def compare_to_best_baseline(
    results: Mapping[str, Sequence[float]], method: str, baselines: Sequence[str]
) -> dict:
    """The paper's significance row: ``method`` against the best of ``baselines``.

    Args:
        results: ``{model name: per-seed mean class AUCs}``.
        method: the model under test (REFERS).
        baselines: candidate baselines; the one with the highest mean over seeds is picked
            (ties: the first in ``baselines`` order).

    Returns:
        ``{"best_baseline": name, "method_mean": float, "baseline_mean": float,
        "p_value": float}`` with ``p_value = t_test(results[method], results[best])``.

    Raises:
        ValueError: ``method`` or a baseline not in ``results``, no baselines, ``method``
            among the baselines, or a result list that is empty or not finite.
    """
    known = sorted(results)
    if method not in results:
        raise ValueError(f"method {method!r} is not in results (known: {known})")
    if isinstance(baselines, str):
        raise ValueError(f"baselines must be a list of names, got the string {baselines!r}")
    baselines = list(baselines)
    if not baselines:
        raise ValueError("baselines is empty: need at least one baseline name")
    missing = [b for b in baselines if b not in results]
    if missing:
        raise ValueError(f"baseline(s) {missing} not in results (known: {known})")
    if method in baselines:
        raise ValueError(f"method {method!r} is also listed as a baseline")

    m = summarize_seeds(results[method])
    summaries = {b: summarize_seeds(results[b]) for b in baselines}
    best = max(baselines, key=lambda b: summaries[b].mean)  # max keeps the first on ties
    return {
        "best_baseline": best,
        "method_mean": m.mean,
        "baseline_mean": summaries[best].mean,
        "p_value": t_test(results[method], results[best]),
    }
