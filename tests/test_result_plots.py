"""The chapters' figures drawn by the library (viz.plots.plot_task_losses, viz.result_plots,
viz.view_fusion) and the fusion-weight numbers behind chapter 03's (evaluation.fusion_weights): each
returns a figure with the axes and artists expected, and none switches the matplotlib backend."""
import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from refers_lite.evaluation.fusion_weights import frontal_weights, slot_means, view_totals, weight_entropy
from refers_lite.evaluation.linear_probe import LinearProbeResult
from refers_lite.viz.plots import plot_task_losses
from refers_lite.viz.result_plots import plot_class_aucs, plot_probe_curves, plot_seed_bars
from refers_lite.viz.view_fusion import pick_studies, plot_fusion_weights, plot_study_slots


@pytest.fixture(autouse=True)
def _same_backend_and_closed_figures():
    before = matplotlib.get_backend()
    yield
    assert matplotlib.get_backend() == before, "a plotting function switched the backend"
    plt.close("all")


def test_task_losses_two_panels_with_chance():
    recs = [{"step": s, "loss": 3.0, "loss_generation": 2.0 / s, "loss_consistency": 2.5}
            for s in range(1, 6)] + [{"step": 5, "val_loss": 1.0}]
    fig = plot_task_losses(recs, batch_size=8)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[1].lines) == 2  # the loss, and ln B
    assert fig.axes[1].lines[1].get_ydata()[0] == pytest.approx(math.log(8))
    assert len(fig.axes[1].lines[0].get_xdata()) == 5  # the validation record is not a training step


def test_seed_bars_one_bar_and_one_dot_set_per_method():
    per_seed = pd.DataFrame({"refers": [0.8, 0.82], "no_task1": [0.7, 0.75], "scratch": [0.6, 0.6]})
    labels = {"refers": "REFERS", "no_task1": "REFERS without Task 1", "scratch": "from scratch"}
    fig = plot_seed_bars(per_seed, ["no_task1", "refers"], labels, "title")
    (ax,) = fig.axes
    assert len(ax.patches) == 2 and len(ax.collections) == 2 + 1  # bars, seed dots, error bars
    assert [t.get_text() for t in ax.get_xticklabels()] == ["w/o Task 1", "REFERS"]
    assert ax.patches[1].get_height() == pytest.approx(0.81)
    assert ax.get_title() == "title"


def test_class_aucs_leaves_the_positives_out():
    per_class = pd.DataFrame({"refers": [0.6, 0.7, 0.8], "scratch": [0.5, 0.5, 0.6], "positives": [3, 4, 5]},
                             index=["a", "b", "c"])
    fig = plot_class_aucs(per_class, "NIH-like")
    (ax,) = fig.axes
    assert len(ax.patches) == 3 * 2 and ax.get_title() == "NIH-like"
    assert len(ax.lines) == 1  # chance


def _probe(domain):
    rows = [{"ratio": r, "seed": s, "mean_auc": 0.6 + 0.1 * k + 0.01 * s, "auc": {}}
            for k, r in enumerate((0.01, 0.1, 1.0)) for s in (0, 1)]
    return LinearProbeResult(domain, [], rows)


def test_probe_curves_one_panel_per_domain():
    class Z:
        def __init__(self, domain, mean_auc):
            self.domain, self.mean_auc = domain, mean_auc

    ft = pd.DataFrame({"domain": ["nih"], "ratio": [0.01], "finetuned_mean_auc": [0.7], "finetuned_std": [0.02]})
    fig = plot_probe_curves([_probe("nih"), _probe("vindr")], [Z("nih", 0.55)], ft)
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == ["nih", "vindr"]
    nih, vindr = fig.axes
    assert len(nih.containers) == 2 and len(vindr.containers) == 1  # probe (+ fine-tuned) error bars
    # chance on both, zero-shot only where it exists (errorbar's own lines are not in containers)
    assert sum(ln.get_linestyle() == "-." for ln in nih.lines) == 1
    assert sum(ln.get_linestyle() == "-." for ln in vindr.lines) == 0
    assert vindr.get_legend() is not None and nih.get_ylim() == (0, 1)
    assert len(plot_probe_curves([_probe("nih")]).axes) == 1  # no zero-shot, no fine-tuning


def test_probe_curves_draw_the_random_init_probe_dashed_where_it_exists():
    rnd = LinearProbeResult("vindr", [], [{"ratio": r, "seed": 0, "mean_auc": 0.5 + 0.01 * k, "auc": {}}
                                          for k, r in enumerate((0.01, 0.1, 1.0))])
    fig = plot_probe_curves([_probe("nih"), _probe("vindr")], random_probes=[rnd])
    nih, vindr = fig.axes
    assert len(nih.containers) == 1 and len(vindr.containers) == 2  # the probe, and random init on vindr only
    (bars,) = [c for c in vindr.containers if c.get_label() == "random-init probe"]
    line = bars.lines[0]  # the data line of the error bars
    assert line.get_linestyle() == "--" and list(line.get_ydata()) == pytest.approx([0.5, 0.51, 0.52])
    assert list(line.get_xdata()) == pytest.approx([1, 10, 100])
    assert "random-init probe" in [t.get_text() for t in vindr.get_legend().get_texts()]


def _study(i, n, views, weights):
    return {"study_id": f"s{i}", "n_images": n, "slots": [0, 1, 1] if n == 2 else [0, 1, 2][:3],
            "views": views, "weights": np.array(weights)}


STUDIES = [
    _study(0, 2, ["frontal", "lateral", "lateral"], [0.5, 0.3, 0.2]),
    _study(1, 1, ["frontal", "frontal", "frontal"], [0.4, 0.3, 0.3]),
    _study(2, 3, ["frontal", "lateral", "unknown"], [0.2, 0.2, 0.6]),
    _study(3, 2, ["lateral", "frontal", "frontal"], [0.1, 0.6, 0.3]),
]


def test_fusion_weight_numbers():
    assert view_totals(["frontal", "lateral", "lateral"], [0.5, 0.3, 0.2]) == pytest.approx(
        {"frontal": 0.5, "lateral": 0.5, "unknown": 0.0})
    untrained = np.full((4, 3), 1 / 3)
    two = frontal_weights(STUDIES, untrained)
    assert list(two["repeated film"]) == ["lateral", "frontal"]  # the two-image studies only
    np.testing.assert_allclose(two["frontal weight (pre-trained)"], [0.5, 0.9])
    np.testing.assert_allclose(two["frontal weight (untrained fusion)"], [1 / 3, 2 / 3])
    ent = weight_entropy(np.array([[1 / 3] * 3, [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(ent, [1.0, 0.0], atol=1e-9)
    means = slot_means(np.array([s["weights"] for s in STUDIES]), untrained)
    assert list(means.index) == ["slot 1", "slot 2", "slot 3"]
    np.testing.assert_allclose(means["untrained fusion"], [1 / 3] * 3)


def test_pick_studies_mixes_the_sizes_in_order():
    assert [s["study_id"] for s in pick_studies(STUDIES)] == ["s0", "s3", "s1", "s2"]
    assert len(pick_studies(STUDIES, k=2)) == 2


def test_study_slots_three_images_per_study():
    images = {s["study_id"]: np.zeros((3, 1, 8, 8), np.uint8) for s in STUDIES}
    fig = plot_study_slots(pick_studies(STUDIES), images)
    assert len(fig.axes) == 18
    assert sum(len(ax.images) for ax in fig.axes) == 3 * 4
    assert fig.axes[1].get_title() == "lateral\nw = 0.30"  # s0, slot 2
    assert fig.axes[2].get_title() == "lateral (repeat)\nw = 0.20"
    assert [t.get_text() for t in fig.axes[1].texts] == ["study s0"]


def test_fusion_weights_three_panels():
    weights = np.array([s["weights"] for s in STUDIES])
    untrained = np.full((4, 3), 1 / 3)
    fig = plot_fusion_weights(frontal_weights(STUDIES, untrained), slot_means(weights, untrained),
                              weight_entropy(weights))
    a1, a3, a2 = fig.axes
    assert len(fig.axes) == 3
    assert len(a1.patches) == 2 * 40 and len(a1.lines) == 2  # two histograms, 1/3 and 2/3
    assert len(a3.patches) == 3 * 2  # slots x (pre-trained, untrained)
    assert len(a2.patches) == 40
