"""Figure 1 of the paper (the architecture of REFERS), drawn by code.

    from refers_lite.viz.figures import architecture_figure
    fig = architecture_figure()

The boxes name the modules of ``refers_lite.models`` that implement each part: a study's views, each
through the shared radiograph transformer (patch embedding, position embedding, aggregation embedding,
self-attention blocks and the recurrent concatenation of the last layer), view fusion into the study
feature $v^k$, then the two tasks: report generation by the report transformer (Task 1, Eq. 1) and
study-report consistency with the BERT report feature $t^k$ (Task 2, Eq. 2). Nothing here changes the
matplotlib backend: the figure is returned, and a notebook shows it.
"""
from __future__ import annotations

from typing import Sequence

# colours of the three families of boxes: images, the vision side, the text side, the losses
_IMAGE, _VISION, _TEXT, _LOSS = "#eeeeee", "#dbe9f6", "#fde4c8", "#d9f0d3"


def _box(ax, x, y, w, h, text, colour, fontsize=8.0, bold_first=True, **kw):
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=colour, edgecolor="#444444", linewidth=0.9, **kw))
    lines = text.split("\n")
    if bold_first and len(lines) > 1:
        ax.text(x + w / 2, y + h - 0.22, lines[0], ha="center", va="top", fontsize=fontsize, weight="bold")
        ax.text(x + w / 2, y + (h - 0.32) / 2, "\n".join(lines[1:]), ha="center", va="center",
                fontsize=fontsize - 1, linespacing=1.25)
    else:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize,
                weight="bold" if bold_first else "normal")
    return (x, y, w, h)


def _arrow(ax, start, end, text=None, style="-|>", colour="#333333", rad=0.0, fontsize=7.0, dashed=False):
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=10, color=colour, linewidth=1.0,
                                 connectionstyle=f"arc3,rad={rad}", linestyle="--" if dashed else "-"))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, text, ha="center", va="bottom",
                fontsize=fontsize, color=colour)


def architecture_figure(num_views: int = 3, report: str = "the heart is normal in size . no effusion .",
                        view_names: Sequence[str] | None = None, figsize=(12.5, 6.2)):
    """Figure 1 of the paper: the radiograph transformer with recurrent concatenation, view fusion,
    the report transformer (Task 1) and the study-report consistency (Task 2). Returns the figure."""
    import matplotlib.pyplot as plt

    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    names = list(view_names) if view_names is not None else \
        (["frontal", "lateral", "frontal (repeat)"] + [f"view {j + 1}" for j in range(3, num_views)])[:num_views]
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, 25)
    ax.set_ylim(0, 12.4)
    ax.axis("off")

    # -- the study: its views (left) ------------------------------------------------------------
    ys = [8.6 - j * (7.4 / max(num_views, 1)) for j in range(num_views)]
    h_view = min(1.8, 6.6 / num_views)
    ax.text(1.3, 11.0, "a study\n(views of one visit)", ha="center", fontsize=8, weight="bold")
    for j, (y, name) in enumerate(zip(ys, names)):
        _box(ax, 0.3, y, 2.0, h_view, f"radiograph\n{name}", _IMAGE, fontsize=7.5)

    # -- the radiograph transformer, shared by every view ----------------------------------------
    rx, rw = 3.3, 5.6
    top, bottom = ys[0] + h_view + 0.25, ys[-1] - 0.25
    _box(ax, rx, bottom, rw, top - bottom, "", _VISION, bold_first=False)
    ax.text(rx + rw / 2, top - 0.2, "radiograph transformer (one, shared by every view)", ha="center",
            va="top", fontsize=8, weight="bold")
    steps = ["patch embedding (P x P patches -> width D)\n+ position embedding",
             "aggregation embedding z_agg (zeros) prepended",
             "self-attention blocks  x depth",
             "recurrent concatenation (last layer):\nz_i <- W_rc [z_i ; z_agg] for every patch i",
             "last block -> aggregation embedding f_j"]
    sy = top - 0.75
    sh = (top - bottom - 1.0) / len(steps)
    for k, s in enumerate(steps):
        y = sy - (k + 1) * sh + 0.08
        colour = "#c6dbef" if "recurrent" in s else "white"
        _box(ax, rx + 0.25, y, rw - 0.5, sh - 0.16, s, colour, fontsize=7.0, bold_first=False)
        if k:
            _arrow(ax, (rx + rw / 2, y + sh), (rx + rw / 2, y + sh - 0.16))
    ax.text(rx + rw / 2, bottom - 0.45, "radiograph_transformer.py  (agg_mode: concat | add | none)",
            ha="center", fontsize=6.5, family="monospace", color="#555555")
    for y in ys:
        _arrow(ax, (2.3, y + h_view / 2), (rx, y + h_view / 2))

    # -- view fusion -----------------------------------------------------------------------------
    fx, fw, fy, fh = 10.0, 3.6, 3.4, 5.0
    _box(ax, fx, fy, fw, fh, "view fusion\nattention over the views:\n"
         "a = MLP([f_1; ...; f_V])\nw = softmax(a)\n"
         "v^k = [w_1 f_1; ...; w_V f_V]\n(a padded view: weight 0)", _VISION, fontsize=8)
    ax.text(fx + fw / 2, fy - 0.45, "view_fusion.py", ha="center", fontsize=6.5, family="monospace",
            color="#555555")
    for y in ys:
        _arrow(ax, (rx + rw, y + h_view / 2), (fx, fy + fh / 2 + (y + h_view / 2 - (fy + fh / 2)) * 0.5),
               text="f_j" if y == ys[0] else None)

    # -- Task 1: report generation -------------------------------------------------------------
    tx, tw = 15.2, 5.2
    _box(ax, tx, 7.6, tw, 3.4, "Task 1: report generation\nreport transformer (decoder):\n"
         "attends to v^k and the views' patch tokens;\ncausal mask over the report so far\n"
         "(teacher forcing)", _TEXT, fontsize=8)
    ax.text(tx + tw / 2, 7.2, "report_transformer.py", ha="center", fontsize=6.5, family="monospace",
            color="#555555")
    _arrow(ax, (fx + fw, fy + fh - 0.6), (tx, 9.3), text="v^k")
    _box(ax, 21.2, 8.3, 3.5, 2.0, "Eq. 1\nL_language =\n- sum_i log p(w_i | w_<i, v^k)", _LOSS, fontsize=8)
    _arrow(ax, (tx + tw, 9.3), (21.2, 9.3))

    # -- Task 2: study-report consistency ---------------------------------------------------------
    _box(ax, tx, 0.5, tw, 2.4, f"the study's report (free text)\n\"{report}\"", _IMAGE, fontsize=7.5)
    _box(ax, tx, 3.6, tw, 2.9, "Task 2: study-report consistency\nBERT text encoder -> t^k\n"
         "(MiniLM offline;\nBio_ClinicalBERT with the internet)", _TEXT, fontsize=8)
    ax.text(tx + tw / 2, 3.25, "text_encoder.py", ha="center", fontsize=6.5, family="monospace",
            color="#555555")
    _arrow(ax, (tx + tw / 2, 2.9), (tx + tw / 2, 3.6))
    _arrow(ax, (tx + tw * 0.8, 2.9), (tx + tw * 0.8, 7.6), text=None, dashed=True, rad=0.0)
    ax.text(tx + tw * 0.8 + 0.15, 7.0, "targets\n(Task 1)", fontsize=6.5, color="#333333", va="top")
    _box(ax, 21.2, 3.3, 3.5, 3.5, "Eq. 2 (InfoNCE)\ns(v, t) = cos(v, t) / tau\neach study picks its own\n"
         "report among the B\nof the batch (and back)", _LOSS, fontsize=8)
    _arrow(ax, (tx + tw, 5.0), (21.2, 5.0), text="t^k")
    _arrow(ax, (fx + fw, fy + 0.6), (21.2, 4.0), rad=0.25)
    ax.text(fx + fw + 0.6, fy - 0.05, "v^k", fontsize=7, color="#333333")
    ax.text(12.5, 0.25, "losses.py: L = L_language + L_contrast (pre-training); fine-tuning keeps the radiograph "
            "transformer", ha="center", fontsize=6.5, family="monospace", color="#555555")
    fig.tight_layout()
    return fig
