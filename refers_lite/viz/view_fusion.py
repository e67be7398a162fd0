"""Figures of view fusion (chapter 03): studies with the weight each of their slots received, and the
distribution of the weights over all held-out studies, pre-trained against an untrained fusion.

Each function draws with pyplot and returns the figure; the caller shows it. Studies are dicts as in
:mod:`refers_lite.evaluation.fusion_weights` (``study_id``, ``n_images``, ``slots``, ``views``,
``weights``)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd


def pick_studies(studies: Sequence[Mapping], k: int = 6) -> list[Mapping]:
    """Up to ``k`` studies to show, mixing the sizes: three two-image studies, a one-image study,
    two three-image studies, then more two-image studies to fill (in their order, not chosen)."""
    by_n = {n: [s for s in studies if s["n_images"] == n] for n in (1, 2, 3)}
    return (by_n[2][:3] + by_n[1][:1] + by_n[3][:2] + by_n[2][3:])[:k]


def plot_study_slots(picks: Sequence[Mapping], images_of: Mapping):
    """Each study of ``picks`` (at most 6) as its three slots, each titled by its view (a repeated film
    marked), and its weight; ``images_of``: study id -> its slot images (3, 1, S, S)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 9, figsize=(13, 4.6), gridspec_kw={"wspace": 0.05, "hspace": 0.55})
    for k, s in enumerate(picks):
        row, col = k // 3, (k % 3) * 3
        imgs = images_of[s["study_id"]]
        for j, ax in enumerate(axes[row, col : col + 3]):
            ax.imshow(imgs[j, 0], cmap="gray")
            repeat = " (repeat)" if s["slots"][j] in s["slots"][:j] else ""
            ax.set_title(f"{s['views'][j]}{repeat}\nw = {s['weights'][j]:.2f}", fontsize=8)
            ax.axis("off")
        mid = axes[row, col + 1]
        mid.text(0.5, -0.08, f"study {s['study_id']}", transform=mid.transAxes, ha="center",
                 va="top", fontsize=8)
    for ax in axes.flat[len(picks) * 3 :]:
        ax.axis("off")
    return fig


def plot_fusion_weights(two: pd.DataFrame, slot_means: pd.DataFrame, entropy: np.ndarray):
    """Three panels: the total weight on the frontal film of two-image studies (pre-trained against
    untrained fusion, ``two`` from ``fusion_weights.frontal_weights``), the mean weight of each slot
    (``fusion_weights.slot_means``), and the normalised entropy of every study's weights."""
    import matplotlib.pyplot as plt

    fig, (a1, a3, a2) = plt.subplots(1, 3, figsize=(13, 3.4),
                                     gridspec_kw={"width_ratios": [1.3, 0.7, 1]})
    for col, colour in (("frontal weight (untrained fusion)", "#999999"),
                        ("frontal weight (pre-trained)", "#4c72b0")):
        a1.hist(two[col], bins=np.linspace(0, 1, 41), alpha=0.7, label=col, color=colour)
    a1.axvline(1 / 3, color="k", ls=":", lw=1)
    a1.axvline(2 / 3, color="k", ls=":", lw=1)
    a1.set_xlabel("total weight on the frontal film (two-image studies)")
    a1.set_ylabel("studies")
    a1.legend(fontsize=8)
    slot_means.plot.bar(ax=a3, color=["#4c72b0", "#999999"], rot=0)
    a3.axhline(1 / 3, color="k", ls=":", lw=1)
    a3.set_ylabel("mean weight (all studies)")
    a3.legend(fontsize=8)
    a2.hist(entropy, bins=np.linspace(0, 1, 41), color="#55a868")
    a2.set_xlabel("entropy of the fusion weights / log 3  (1 = uniform)")
    a2.set_ylabel("studies")
    fig.tight_layout()
    return fig
