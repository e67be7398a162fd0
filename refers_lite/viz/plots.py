"""Plots a reader would rather look at than read: loss curves of a pre-training run (all of its losses,
or the two tasks against chance)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path


def metrics_file(path: str | Path) -> Path:
    """A run folder or its ``metrics.jsonl`` -> the file, which must exist."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log (has the run logged a step yet?)")
    return path


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a run's ``metrics.jsonl`` (a run folder or the file itself).

    A last line that is not JSON was cut short by a kill mid-write: it is dropped with a warning. A bad
    line before it is an error naming the file and the line."""
    path = metrics_file(path)
    lines = [(i, ln) for i, ln in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if ln.strip()]
    records = []
    for i, line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if i == lines[-1][0]:
                warnings.warn(f"{path}, line {i}: dropping a half-written last line (the run was killed while "
                              f"logging)", stacklevel=2)
                break
            raise ValueError(f"{path}, line {i}: not JSON ({e}); the log is corrupt") from e
        if not isinstance(rec, dict):
            raise ValueError(f"{path}, line {i}: not a metrics record (a JSON object), got {line[:40]!r}")
        records.append(rec)
    return records


def truncate_metrics(path: str | Path, step: int) -> None:
    """On resume: keep the records up to ``step`` (later ones will be redone) and drop a half-written last line."""
    path = Path(path)
    if path.is_file():
        keep = [r for r in read_metrics(path) if r.get("step", 0) <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def plot_loss_curves(path: str | Path):
    """Training and validation losses against step, one panel per loss; returns the figure."""
    import matplotlib.pyplot as plt  # picks a non-interactive backend by itself when there is no display

    recs = read_metrics(path)
    train = [r for r in recs if "loss" in r]
    if not train:
        what = "the file is empty" if not recs else f"{len(recs)} records, none with a loss"
        raise ValueError(f"{metrics_file(path)}: no training losses logged yet ({what}); nothing to plot")
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


def plot_task_losses(records: list[dict], batch_size: int):
    """The two pre-training losses of a run's training log side by side: Task 1 (report generation,
    Eq. 1) and Task 2 (study-report consistency, Eq. 2) against its chance level ln B; returns the
    figure (``records``: :func:`read_metrics` of the run)."""
    import math

    import matplotlib.pyplot as plt

    train = [r for r in records if "loss_consistency" in r]
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].plot(steps, [r["loss_generation"] for r in train])
    axes[0].set(title="Task 1: report generation (Eq. 1)", xlabel="step", ylabel="loss")
    axes[1].plot(steps, [r["loss_consistency"] for r in train], label="training")
    axes[1].axhline(math.log(batch_size), color="k", ls="--", lw=1, label=f"chance, ln {batch_size}")
    axes[1].set(title="Task 2: study–report consistency (Eq. 2)", xlabel="step")
    axes[1].legend()
    fig.tight_layout()
    return fig
