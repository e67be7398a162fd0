"""Figures of fine-tuning and evaluation results: the mean AUC of each method with every seed (chapter
07), per-class AUCs (chapter 05), and linear-probe curves beside zero-shot and fine-tuning (chapter 08).

Each function draws with pyplot and returns the figure; the caller shows it (``plt.show()``), so the
figure appears inline in a notebook. Nothing here chooses a backend.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd


def plot_seed_bars(per_seed: pd.DataFrame, order: Sequence[str], labels: Mapping[str, str],
                   title: str):
    """One bar per method of ``order`` (mean over seeds, error bar: std over seeds, ddof 0) with every
    seed as a dot, and chance (0.5) dashed; ``per_seed``: seeds x methods of mean test AUC; ``labels``:
    method -> label ("REFERS without " is shortened to "w/o ")."""
    import matplotlib.pyplot as plt

    order = list(order)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar(range(len(order)), per_seed[order].mean().values,
           yerr=per_seed[order].std(ddof=0).values, capsize=4, color="#9ecae1")
    for j, m in enumerate(order):
        ax.scatter([j] * len(per_seed), per_seed[m].values, color="k", s=12, zorder=3)
    ax.axhline(0.5, color="k", lw=1, ls="--")
    ax.set_xticks(range(len(order)), [labels[m].replace("REFERS without ", "w/o ") for m in order],
                  rotation=25, ha="right", fontsize=8)
    ax.set(ylabel="test AUC", title=title)
    fig.tight_layout()
    return fig


def plot_class_aucs(per_class: pd.DataFrame, title: str):
    """Grouped bars of test AUC per class (rows) and method (columns; a ``positives`` column is left
    out), with chance (0.5) dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    per_class.drop(columns="positives", errors="ignore").plot.bar(ax=ax)
    ax.axhline(0.5, color="k", lw=1, ls="--")
    ax.set(ylabel="test AUC", title=title)
    fig.tight_layout()
    return fig


def plot_probe_curves(probes: Sequence, zero_shot: Sequence = (), finetuned: pd.DataFrame | None = None,
                      random_probes: Sequence | None = None):
    """One panel per target domain: the linear probe's mean test AUC (± std over seeds) against the
    fraction of training labels (log axis), the same probe of the architecture at random initialisation
    (dashed, where ``random_probes`` has the domain), the zero-shot mean AUC of that domain, the fine-tuned
    REFERS where ``finetuned`` has the domain (columns domain, ratio, finetuned_mean_auc,
    finetuned_std), and chance. ``probes`` and ``random_probes``: :class:`~refers_lite.evaluation.
    linear_probe.LinearProbeResult` s; ``zero_shot``: :class:`~refers_lite.evaluation.zero_shot.ZeroShotResult` s."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(probes), figsize=(3.2 * len(probes), 3), squeeze=False,
                             sharey=True)
    for ax, probe in zip(axes[0], probes):
        s = probe.summary()
        ax.errorbar(100 * s["ratio"], s["mean_auc"], yerr=s["std"], marker="o", capsize=3,
                    label="linear probe")
        rnd = next((p for p in random_probes or () if p.domain == probe.domain), None)
        if rnd is not None:
            r = rnd.summary()
            ax.errorbar(100 * r["ratio"], r["mean_auc"], yerr=r["std"], marker="o", mfc="none", ls="--",
                        capsize=3, color="tab:gray", label="random-init probe")
        zsd = next((z for z in zero_shot if z.domain == probe.domain), None)
        if zsd is not None:
            ax.axhline(zsd.mean_auc, color="tab:purple", ls="-.", label="zero-shot")
        if finetuned is not None:
            ft = finetuned[finetuned["domain"] == probe.domain]
            if len(ft):
                ax.errorbar(100 * ft["ratio"], ft["finetuned_mean_auc"], yerr=ft["finetuned_std"],
                            marker="s", ls="", capsize=3, color="tab:orange",
                            label="fine-tuned REFERS")
        ax.axhline(0.5, color="k", ls="--", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_xticks([1, 10, 100], ["1 %", "10 %", "100 %"])
        ax.minorticks_off()
        ax.set_title(probe.domain)
        ax.set_xlabel("training labels")
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel("mean test AUC")
    axes[0, -1].legend(fontsize=7)
    return fig
