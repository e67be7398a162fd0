"""Figures of the synthetic radiographs: the findings contact sheet and domain samples."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["contact_sheet", "domain_samples", "draw_boxes"]


def draw_boxes(ax, boxes, color: str = "red", label: bool = True) -> None:
    """Draw boxes (objects with label/x0/y0/x1/y1, or dict rows) on a matplotlib axis."""
    from matplotlib.patches import Rectangle

    for b in boxes:
        g = (lambda k: b[k]) if isinstance(b, dict) else (lambda k: getattr(b, k))
        ax.add_patch(Rectangle((g("x0") - 0.5, g("y0") - 0.5), g("x1") - g("x0"), g("y1") - g("y0"),
                               fill=False, edgecolor=color, linewidth=1.0))
        if label:
            ax.text(g("x0"), g("y0") - 2, str(g("label")), color=color, fontsize=6, va="bottom")


def contact_sheet(findings: Sequence[str] | None = None, patient: int = 1000, seed: int = 0, size: int = 256,
                  severity: str = "moderate", acquisition: str = "iu", cols: int = 4):
    """For each finding (default: all registered, plus 'normal'): PA and lateral of one patient, boxes in red.

    Returns the matplotlib Figure.  Deterministic given the arguments.
    """
    import matplotlib.pyplot as plt

    from .anatomy import load_base_anatomy, make_patient
    from .findings import FINDINGS, make_finding
    from .render import ACQUISITIONS, PatientRenderer

    names = ["normal", *sorted(FINDINGS)] if findings is None else list(findings)
    pr = PatientRenderer(make_patient(load_base_anatomy(), patient), size)
    acq = ACQUISITIONS[acquisition]
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 1.9, rows * 2.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, name in enumerate(names):
        lesions = [] if name == "normal" else make_finding(name, pr.anatomy, np.random.default_rng([seed, n]),
                                                          severity=severity)
        side = ",".join(sorted({les.side for les in lesions})) if lesions else ""
        for v, view in enumerate(("pa", "lateral")):
            settings = acq.sample(np.random.default_rng([seed, n, v]), view)
            settings.update(rotation_deg=0.0, shift_px=(0.0, 0.0))
            r = pr.radiograph(lesions, settings)
            ax = axes[n // cols, 2 * (n % cols) + v]
            ax.imshow(r.image, cmap="gray", vmin=0, vmax=255)
            draw_boxes(ax, r.boxes, label=False)
            ax.set_title(f"{name} {side}\n{view}" if v == 0 else view, fontsize=7)
    fig.tight_layout()
    return fig


def domain_samples(domain_dir, n: int = 8, seed: int = 0):
    """``n`` random images of a built domain folder with their boxes and findings; returns the Figure."""
    import json
    from pathlib import Path

    import matplotlib.pyplot as plt

    from ..loading.image_cache import ImageCache

    cache = ImageCache.open(Path(domain_dir) / "cache", verify=False)
    pick = np.random.default_rng(seed).choice(len(cache), size=min(n, len(cache)), replace=False)
    cols = min(4, len(pick))
    rows = int(np.ceil(len(pick) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, pick):
        row = cache.index.iloc[int(i)]
        ax.imshow(cache.image(int(i)), cmap="gray", vmin=0, vmax=255)
        boxes = [dict(label=b[0], x0=b[1], y0=b[2], x1=b[3], y1=b[4]) for b in json.loads(row["boxes"])]
        draw_boxes(ax, boxes)
        ax.set_title(f"{row['image_id']} ({row['view']})\n{row['findings'] or 'normal'}", fontsize=7)
    fig.tight_layout()
    return fig
