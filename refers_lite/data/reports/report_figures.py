"""Figures of the report corpus that the course shows: token lengths, structured labels, views per
study, and reports before and after cleaning and after a left/right swap.

Every function takes the corpus (or its kept reports) and returns a matplotlib figure or plain
rows, so a notebook decides how to show them. IU X-ray text is CC BY-NC-ND 4.0: where report text
is shown, :data:`~refers_lite.data.reports.iu_xray.ATTRIBUTION` goes with it (``cleaning_examples`` returns it).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from .cleaning import clean_report
from .corpus import CorpusReport, ReportCorpus
from .iu_xray import ATTRIBUTION
from .report_dataset import label_counts
from .side_swap import has_side_words, swap_sides


def plot_token_lengths(corpus: ReportCorpus, bins: int = 40):
    """Histogram of cleaned report lengths (tokens), with the 50th/90th/99th percentiles marked."""
    import matplotlib.pyplot as plt
    lengths = np.array([r.n_tokens for r in corpus.kept])
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.hist(lengths, bins=bins, color="#4c72b0")
    for p, style in ((50, "-"), (90, "--"), (99, ":")):
        v = np.percentile(lengths, p)
        ax.axvline(v, color="k", ls=style, lw=1, label=f"p{p} = {v:g}")
    ax.set_xlabel("tokens per report (FINDINGS + IMPRESSION, cleaned)")
    ax.set_ylabel("reports")
    ax.set_title(f"{len(lengths):,} reports")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_label_frequencies(reports: list[CorpusReport]):
    """Studies per structured label (horizontal bars, most frequent on top)."""
    import matplotlib.pyplot as plt
    counts = label_counts(reports)
    names, values = list(counts)[::-1], list(counts.values())[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(names) + 0.8))
    ax.barh(names, values, color="#55a868")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,}", va="center", fontsize=7)
    ax.set_xlabel("studies")
    ax.set_title("structured labels (from MeSH tags)")
    fig.tight_layout()
    return fig


def plot_views_per_study(corpus: ReportCorpus):
    """Images per study, each bar split by the views of its studies' images."""
    import matplotlib.pyplot as plt
    by_n: dict[int, Counter] = {}
    for r in corpus.kept:
        by_n.setdefault(len(r.record.images), Counter()).update(im.view for im in r.record.images)
    ns = sorted(by_n)
    studies = Counter(len(r.record.images) for r in corpus.kept)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    a1.bar([str(n) for n in ns], [studies[n] for n in ns], color="#4c72b0")
    a1.set_xlabel("images in the study")
    a1.set_ylabel("studies")
    bottom = np.zeros(len(ns))
    for view, color in (("frontal", "#4c72b0"), ("lateral", "#dd8452"), ("unknown", "#999999")):
        vals = np.array([by_n[n][view] for n in ns], dtype=float)
        a2.bar([str(n) for n in ns], vals, bottom=bottom, label=view, color=color)
        bottom += vals
    a2.set_xlabel("images in the study")
    a2.set_ylabel("images")
    a2.legend(fontsize=8)
    a2.set_title("views")
    fig.tight_layout()
    return fig


def cleaning_examples(corpus: ReportCorpus, n: int = 3, seed: int = 0) -> tuple[list[dict], str]:
    """``n`` reports that have both a de-identified span and a side word: raw, cleaned, swapped.

    Returns the rows and the attribution to print with them.
    """
    candidates = [r for r in corpus.kept if "[ANON]" in r.text and has_side_words(r.text)]
    if not candidates:
        raise ValueError("no report with both a de-identified span and a side word in this corpus")
    rng = np.random.default_rng(seed)
    picks = [candidates[i] for i in sorted(rng.choice(len(candidates), size=min(n, len(candidates)), replace=False))]
    rows = [{"study_id": r.study_id, "raw": r.record.raw_text, "cleaned": clean_report(r.record.raw_text),
             "swapped": swap_sides(r.text)} for r in picks]
    return rows, ATTRIBUTION
