"""Plots a reader would rather look at than read: loss curves of a pre-training run."""
from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a run's ``metrics.jsonl`` (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log (has the run logged a step yet?)")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {i}: not JSON ({e})") from e
    return records


def plot_loss_curves(path: str | Path):
    """Training and validation losses against step, one panel per loss; returns the figure."""
    import matplotlib.pyplot as plt  # picks a non-interactive backend by itself when there is no display

    recs = read_metrics(path)
    train = [r for r in recs if "loss" in r]
    val = [r for r in recs if "val_loss" in r]
    names = [k for k in ("loss", "loss_generation", "loss_consistency") if any(k in r for r in train)]
    titles = {"loss": "total (Eq. 1 + Eq. 2)", "loss_generation": "report generation (Eq. 1)",
              "loss_consistency": "study-report consistency (Eq. 2)"}
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, k in zip(axes[0], names):
        ax.plot([r["step"] for r in train if k in r], [r[k] for r in train if k in r], label="train", lw=1.2)
        vk = f"val_{k}"
        if any(vk in r for r in val):
            ax.plot([r["step"] for r in val if vk in r], [r[vk] for r in val if vk in r], "o-", label="validation", lw=1.5)
        ax.set_title(titles[k], fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend()
    fig.tight_layout()
    return fig
