"""Cross-modal retrieval in the joint space of Task 2 (Eq. 2): image -> report and report -> image.

Eq. 2 trains each study to pick its own report out of the mini-batch by ``cos(v^k, t^k) / tau``.
Retrieval asks the same question on held-out studies, against *every* report of the split: rank all
N reports by their similarity to a study (image -> report), or all N studies by their similarity to
a report (report -> image), and count how often the true partner is among the first K:

    Recall@K = (1 / N) * #{queries whose partner ranks <= K}

A model that learned nothing ranks the partner uniformly at random: Recall@K = K / N (the random
baseline, :func:`random_recall`).

Ties. Identical reports (frequent in IU X-ray: "no acute cardiopulmonary abnormality") have identical
embeddings, and a collapsed model gives every pair the same similarity. A tie is broken at random,
and we count its *expected* outcome exactly: with g candidates strictly more similar than the
partner and e others exactly as similar, the partner's rank is uniform on g+1 .. g+e+1, so it is in
the top K with probability ``clip((K - g) / (e + 1), 0, 1)``. A constant similarity matrix thus
scores exactly K / N, never 100 %.

The studies are the source domain's held-out test split (``SourceStudies(root, "test")``), each with
its V views drawn by pre-training's rule with a fixed seed; see ``evaluation/joint_space.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["KS", "recall_at_k", "distinct_report_recall", "expected_ranks", "random_recall", "chance_interval",
           "RetrievalResult", "retrieval"]

KS = (1, 5, 10)


def _check(sim, targets) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"the similarity matrix must be (queries, candidates) with both >= 1, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("the similarity matrix holds NaN or inf values")
    if targets is None:
        if s.shape[0] != s.shape[1]:
            raise ValueError(f"without targets the matrix must be square (query i's partner is candidate i), "
                             f"got shape {s.shape}")
        t = np.arange(s.shape[0])
    else:
        t = np.asarray(targets)
        if t.shape != (s.shape[0],) or not np.issubdtype(t.dtype, np.integer) or t.min() < 0 or t.max() >= s.shape[1]:
            raise ValueError(f"targets must be {s.shape[0]} candidate indices in [0, {s.shape[1]}), got {targets!r}")
    return s, t


def _greater_and_ties(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true = s[np.arange(len(t)), t][:, None]  # (Q, 1) the partner's similarity
    greater = (s > true).sum(1)  # (Q,) candidates strictly above the partner
    ties = (s == true).sum(1) - 1  # (Q,) other candidates exactly as similar
    return greater, ties


def recall_at_k(sim, ks: Sequence[int] = KS, targets=None) -> dict[int, float]:
    """``{K: Recall@K}`` of a (queries, candidates) similarity matrix; query i's partner is candidate
    ``targets[i]`` (default i). Ties are broken at random, in expectation (module doc)."""
    s, t = _check(sim, targets)
    greater, ties = _greater_and_ties(s, t)
    out = {}
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"K must be >= 1, got {k}")
        out[int(k)] = float(np.clip((int(k) - greater) / (ties + 1), 0, 1).mean())
    return out


def distinct_report_recall(sim, texts: Sequence[str], ks: Sequence[int] = KS) -> tuple[dict[int, float], int]:
    """Image -> report Recall@K where a report whose text equals the true report's text counts as a hit.

    ``sim`` (N studies, N reports), report j's text ``texts[j]``, study i's partner report i. The candidates
    become the *distinct* texts, each scored by its best-scoring report (identical texts embed alike in a
    deterministic text encoder, so this is any of them), so "No acute cardiopulmonary abnormality." is one
    candidate, and the random baseline is K / (distinct texts). Returns ({K: Recall@K}, distinct texts)."""
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or len(texts) != s.shape[1]:
        raise ValueError(f"need a square (N, N) similarity and N texts, got {s.shape} and {len(texts)} texts")
    position: dict[str, int] = {}
    group = np.array([position.setdefault(text, len(position)) for text in texts])  # report j -> its text's index
    scores = np.full((s.shape[0], len(position)), -np.inf)
    np.maximum.at(scores, (slice(None), group), s)  # (N, distinct): the best report of each text
    return recall_at_k(scores, ks, group), len(position)


def expected_ranks(sim, targets=None) -> np.ndarray:
    """(Q,) expected 1-based rank of each query's partner (ties broken at random)."""
    s, t = _check(sim, targets)
    greater, ties = _greater_and_ties(s, t)
    return greater + 1 + ties / 2


def random_recall(k: int, n: int) -> float:
    """Recall@K of a random ranking of n candidates: K / n (1 when K >= n)."""
    if n < 1 or k < 1:
        raise ValueError(f"need n >= 1 and K >= 1, got n={n}, K={k}")
    return min(k, n) / n


def chance_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` range of Recall@K over n queries when each partner's rank is uniform: the number of
    hits is Binomial(n, K / n) (queries taken as independent), divided by n."""
    from scipy.stats import binom
    p = random_recall(k, n)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    lo, hi = binom.ppf([(1 - level) / 2, (1 + level) / 2], n, p)
    return float(lo / n), float(hi / n)


@dataclass
class RetrievalResult:
    split: str
    image_to_report: dict[int, float]
    report_to_image: dict[int, float]
    random: dict[int, float]
    median_rank_i2r: float
    median_rank_r2i: float
    similarity: np.ndarray = field(repr=False)  # (N, N): row = study, column = report
    study_ids: list[str] = field(repr=False, default_factory=list)
    texts: list[str] = field(repr=False, default_factory=list)

    @property
    def n(self) -> int:
        return len(self.similarity)

    @property
    def distinct_reports(self) -> int:
        return len(set(self.texts))

    def to_frame(self) -> pd.DataFrame:
        """One row per direction (and the random baseline), one column per Recall@K, plus the median rank."""
        ks = sorted(self.random)
        rows = [{"direction": "image -> report", **{f"R@{k}": self.image_to_report[k] for k in ks},
                 "median rank": self.median_rank_i2r},
                {"direction": "report -> image", **{f"R@{k}": self.report_to_image[k] for k in ks},
                 "median rank": self.median_rank_r2i},
                {"direction": "random (K / N)", **{f"R@{k}": self.random[k] for k in ks},
                 "median rank": (self.n + 1) / 2},
                {"direction": "random, 95 % upper bound", **{f"R@{k}": chance_interval(k, self.n)[1] for k in ks},
                 "median rank": float("nan")}]
        return pd.DataFrame(rows).set_index("direction")

    def top_reports(self, i: int, k: int = 3) -> list[tuple[int, float, str]]:
        """The k reports most similar to study i: (index, cos / tau, text), best first."""
        order = np.argsort(-self.similarity[i], kind="stable")[:k]
        return [(int(j), float(self.similarity[i, j]), self.texts[j]) for j in order]


def retrieval(space, source: str | Path, split: str = "test", ks: Sequence[int] = KS, seed: int = 0,
              report_tokenizer=None) -> RetrievalResult:
    """Image -> report and report -> image Recall@K on a source-domain split.

    ``space``: a :class:`~refers_lite.evaluation.joint_space.JointSpace`; ``source``: a source-domain folder
    (or a ``SourceStudies``); ``seed`` fixes which views of a study with more than V are used."""
    from ..data.loading.source_studies import SourceStudies
    ds = source if isinstance(source, SourceStudies) else SourceStudies(source, split, report_tokenizer=report_tokenizer)
    if len(ds) < 2:
        raise ValueError(f"{ds!r}: retrieval needs at least 2 studies")
    v, t, texts, ids = space.embed_source(ds, seed=seed)
    sim = space.similarity(v, t).double().numpy()  # (N, N)
    n = len(sim)
    return RetrievalResult(ds.split or "all", recall_at_k(sim, ks), recall_at_k(sim.T, ks),
                           {int(k): random_recall(int(k), n) for k in ks},
                           float(np.median(expected_ranks(sim))), float(np.median(expected_ranks(sim.T))),
                           sim, ids, texts)
