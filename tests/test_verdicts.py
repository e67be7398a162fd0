"""The chapters' verdicts (refers_lite.evaluation.verdicts) on small made-up results: each sentence follows
the numbers, both ways (significant or not at p < 0.05, above or below, at chance or not)."""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_ind

from refers_lite.evaluation.evaluate import Evaluation
from refers_lite.evaluation.linear_probe import LinearProbeResult
from refers_lite.evaluation.retrieval import chance_interval
from refers_lite.evaluation.verdicts import (
    ALPHA,
    ablation_verdict,
    beyond_verdict,
    finetuned_probe_line,
    per_seed_table,
    random_init_comparison,
    random_init_line,
    seed_aucs,
    table1_verdict,
    task2_log,
    zero_shot_ranges,
)

LABELS = {"refers": "REFERS", "moco": "MoCo v2", "scratch": "from scratch",
          "no_task1": "REFERS without Task 1", "no_fusion": "REFERS without view fusion"}


def results_frame(cells: dict) -> pd.DataFrame:
    """``results.csv`` as the grid writes it: one row per class of each (method, domain, ratio, seed),
    ``mean_auc`` repeated on each; ``cells``: (method, domain, ratio) -> the per-seed mean AUCs."""
    rows = []
    for (method, domain, ratio), aucs in cells.items():
        for seed, a in enumerate(aucs):
            for c, auc in (("effusion", a - 0.05), ("nodule", a + 0.05)):
                rows.append({"method": method, "domain": domain, "ratio": ratio, "seed": seed,
                             "class": c, "auc": auc, "mean_auc": a})
    return pd.DataFrame(rows)


WIN = {  # nih 1 %: REFERS clearly above both; nih 100 %: REFERS above MoCo by noise only
    ("refers", "nih", 0.01): [0.80, 0.81, 0.82],
    ("moco", "nih", 0.01): [0.70, 0.71, 0.72],
    ("scratch", "nih", 0.01): [0.60, 0.61, 0.62],
    ("refers", "nih", 1.0): [0.70, 0.76, 0.82],
    ("moco", "nih", 1.0): [0.69, 0.75, 0.81],
    ("scratch", "nih", 1.0): [0.60, 0.61, 0.62],
}
COLUMNS = [("nih", 0.01), ("nih", 1.0)]
METHODS3 = ["refers", "moco", "scratch"]


def test_seed_aucs_and_per_seed_table_take_one_value_per_seed():
    res = results_frame(WIN)
    np.testing.assert_allclose(seed_aucs(res, "moco", "nih", 0.01), [0.70, 0.71, 0.72])
    table = per_seed_table(res, "nih", 1.0)
    assert list(table.index) == [0, 1, 2] and set(table.columns) == set(METHODS3)
    np.testing.assert_allclose(table["refers"], [0.70, 0.76, 0.82])


def test_table1_refers_significantly_above_the_best_other_method():
    v = table1_verdict(results_frame(WIN), COLUMNS, METHODS3, labels=LABELS)
    row = v.table.loc["nih 1%"]
    assert row["best other"] == "MoCo v2"
    assert row["difference"] == pytest.approx(0.10)
    assert row["p"] == pytest.approx(ttest_ind([0.80, 0.81, 0.82], [0.70, 0.71, 0.72]).pvalue)
    assert row["p"] < ALPHA and v.table.loc["nih 100%", "p"] > ALPHA
    assert v.lines[0] == ("* REFERS is significantly better than the best other method (p < 0.05) in 1 "
                          "of 2 columns: nih 1%.")
    assert v.lines[1] == "* At 1 % of the labels the difference is +0.100 AUC."
    assert len(v.lines) == 2 and v.markdown == "\n".join(v.lines)  # above chance, Task 2 not flagged


def test_table1_refers_not_above_the_best_other_method():
    cells = {  # REFERS below MoCo, and every REFERS column near chance
        ("refers", "nih", 0.01): [0.50, 0.51, 0.52],
        ("moco", "nih", 0.01): [0.53, 0.54, 0.55],
        ("scratch", "nih", 0.01): [0.48, 0.49, 0.50],
    }
    v = table1_verdict(results_frame(cells), [("nih", 0.01)], METHODS3, labels=LABELS,
                       task2_at_chance=True)
    assert v.table.loc["nih 1%", "difference"] == pytest.approx(-0.03)
    assert v.lines[0] == ("* REFERS is significantly better than the best other method (p < 0.05) in 0 "
                          "of 1 columns.")
    assert v.lines[1] == "* At 1 % of the labels the difference is -0.030 AUC."
    assert v.lines[2].startswith("* The pre-training log above shows Task 2 at chance (ln B)")
    assert v.lines[3].startswith("* No column is clearly above chance (AUC 0.5) for REFERS")


def test_table1_threshold_is_the_given_alpha():
    res = results_frame(WIN)
    p = table1_verdict(res, COLUMNS, METHODS3, labels=LABELS).table.loc["nih 1%", "p"]
    strict = table1_verdict(res, COLUMNS, METHODS3, labels=LABELS, alpha=p / 2)
    assert strict.lines[0].endswith(f"(p < {p / 2:g}) in 0 of 2 columns.")


def test_table1_with_one_seed_has_no_p_value_and_no_significance():
    cells = {k: v[:1] for k, v in WIN.items()}
    v = table1_verdict(results_frame(cells), COLUMNS, METHODS3, labels=LABELS)
    assert v.table["p"].isna().all()
    assert "in 0 of 2 columns." in v.lines[0]


def test_table1_labels_default_to_the_methods_of_the_experiments():
    v = table1_verdict(results_frame(WIN), COLUMNS, METHODS3)
    from refers_lite.experiments import METHODS
    assert v.table.loc["nih 1%", "best other"] == METHODS["moco"].label


def _per_seed(**cols):
    return pd.DataFrame(cols)


def test_ablation_significant_and_not_significant_above_and_below():
    per_seed = _per_seed(refers=[0.90, 0.91, 0.92], no_task1=[0.70, 0.71, 0.72],
                         no_fusion=[0.88, 0.93, 0.90])
    v = ablation_verdict(per_seed, ["no_task1", "no_fusion", "refers"], labels=LABELS)
    p1 = ttest_ind([0.90, 0.91, 0.92], [0.70, 0.71, 0.72]).pvalue
    p2 = ttest_ind([0.90, 0.91, 0.92], [0.88, 0.93, 0.90]).pvalue
    assert p1 < 0.05 < p2
    assert v.lines == [
        f"* full REFERS above **REFERS without Task 1** by 0.200 AUC; p = {p1:.3g}, significant"
        " (p < 0.05).",
        f"* full REFERS above **REFERS without view fusion** by 0.007 AUC; p = {p2:.3g}, not"
        " significant.",
    ]
    assert v.spread == "largest gap between variants: 0.200 AUC; largest std over seeds: 0.021"
    assert v.near_chance is None  # the best variant is at 0.91


def test_ablation_variant_above_full_refers_reads_below():
    per_seed = _per_seed(refers=[0.50, 0.51, 0.52], no_task1=[0.55, 0.56, 0.57])
    v = ablation_verdict(per_seed, ["no_task1", "refers"], labels=LABELS)
    assert v.lines[0].startswith("* full REFERS below **REFERS without Task 1** by 0.050 AUC; p = ")
    assert v.lines[0].endswith("significant (p < 0.05).")
    assert v.near_chance.startswith("**Every variant scores at most 0.560 test AUC here**")


def test_ablation_with_one_seed_is_not_significant():
    v = ablation_verdict(_per_seed(refers=[0.9], no_task1=[0.5]), ["no_task1", "refers"], labels=LABELS)
    assert v.lines == ["* full REFERS above **REFERS without Task 1** by 0.400 AUC; p = nan, not significant."]


def _log(consistency, B=16, val=None):
    recs = [{"step": s, "loss": 1.0, "loss_generation": 2.0, "loss_consistency": c}
            for s, c in enumerate(consistency, 1)]
    if val is not None:
        recs.append({"step": len(consistency), "val_loss_consistency": val})
    return recs


def test_task2_at_chance_and_below_chance():
    B = 16
    at = task2_log(_log([5.0] * 3 + [math.log(B)] * 5), B)
    assert at.at_chance is True and at.last == pytest.approx(math.log(B))
    assert at.short() == f"last training consistency loss {math.log(B):.4f} vs chance {math.log(B):.4f}: at chance"
    assert at.report()[1].startswith("-> the consistency loss ended at chance")
    below = task2_log(_log([1.0] * 5), B)
    assert below.at_chance is False and below.short().endswith("below chance")
    assert below.report()[1] == f"-> {math.log(B) - 1.0:.3f} nats below chance on its *training* batches"
    assert len(below.report()) == 2  # no validation loss logged


def test_task2_tolerance_decides():
    B = 16
    near = _log([math.log(B) * 0.985] * 5)
    assert task2_log(near, B, rel_tol=0.02).at_chance is True
    assert task2_log(near, B, rel_tol=0.01).at_chance is False


def test_task2_held_out_below_chance_or_memorised():
    B = 16
    held = task2_log(_log([1.0] * 5, val=1.5), B).report()
    assert held[2].endswith("below chance on held-out studies too")
    memorised = task2_log(_log([1.0] * 5, val=math.log(B)), B).report()
    assert "the training pairs are partly memorised" in memorised[2]
    at_chance = task2_log(_log([math.log(B)] * 5, val=1.0), B).report()
    assert len(at_chance) == 2  # at chance: held-out not discussed


def test_task2_off():
    t = task2_log([{"step": 1, "loss": 1.0, "loss_generation": 1.0}], 16)
    assert t.at_chance is None and t.last is None
    assert t.report() == ["this run has no consistency loss (Task 2 off)"]


def _zs(domain, mean_auc, chance=(0.4, 0.6), n=20):
    return SimpleNamespace(domain=domain, mean_auc=mean_auc, chance=chance, labels=[0] * n)


def test_zero_shot_ranges():
    zr = zero_shot_ranges([_zs("nih", 0.7), _zs("vindr", 0.5), _zs("covid_t2", 0.3),
                           _zs("shenzhen", float("nan"))])
    assert (zr.above, zr.inside, zr.below) == (["nih"], ["vindr", "shenzhen"], ["covid_t2"])
    assert zr.line() == ("above the chance range: ['nih']; inside it: ['vindr', 'shenzhen']; below it:"
                         " ['covid_t2']")
    assert zero_shot_ranges([_zs("nih", 0.5)]).line() == (
        "above the chance range: none; inside it: ['nih']; below it: none")


def _probe(domain, aucs):
    return LinearProbeResult(domain, ["a"], [{"ratio": r, "seed": 0, "mean_auc": a, "auc": {"a": a}}
                                             for r, a in aucs.items()])


def _evaluation(r1, distinct, probe_aucs, finetuned=None, n=20):
    quality = pd.DataFrame(
        {"BLEU-1": [0.3], "BLEU-4": [0.1], "ROUGE-L": [0.25], "clinical F1 (macro)": [0.2],
         "distinct reports": [distinct]}, index=["greedy"])
    retrieval = SimpleNamespace(image_to_report={1: r1}, random={1: 1 / n})
    return Evaluation(run_dir=Path("run"), checkpoint=Path("run/best.pt"), profile="smoke",
                      zero_shot=[_zs("nih", 0.7, n=n), _zs("vindr", 0.5, n=n)], retrieval=retrieval,
                      quality=quality, probes=[_probe("nih", probe_aucs)], finetuned=finetuned)


def test_beyond_verdict_when_the_joint_space_learned():
    n = 20
    ft = pd.DataFrame({"domain": ["nih"], "ratio": [0.01], "finetuned_mean_auc": [0.75],
                       "finetuned_std": [0.0]})
    ev = _evaluation(r1=0.5, distinct=12, probe_aucs={0.01: 0.6, 0.1: 0.7, 1.0: 0.8}, finetuned=ft, n=n)
    t2 = task2_log(_log([1.0] * 5), 16)
    lines = beyond_verdict(ev, t2, n_studies=n, decoding="greedy", profile="smoke")
    assert lines[0].startswith("* The consistency loss of this pre-training ended below chance")
    assert lines[1] == ("* Zero-shot: mean AUC over the 2 domains 0.600; above the chance range on 1"
                        " (nih), inside it on 1, below it on 0.")
    assert 0.5 > chance_interval(1, n)[1]
    assert lines[2] == ("* Retrieval: image -> report Recall@1 0.500 against 0.050 at random (above the 95 %"
                        " range of chance).")
    assert lines[3] == ("* Reports (greedy): BLEU-4 0.100, ROUGE-L 0.250, clinical macro F1 0.200, 12"
                        " distinct report(s) for 20 studies.")
    assert lines[4].startswith("* Linear probes: mean AUC over domains 0.600 at 1 % of the labels, 0.800"
                               " at 100 % - the frozen features carry information")
    assert lines[4].endswith("(at most 20 images), that is noise either way.")
    assert lines[5] == ("* Fine-tuning against the probe of the same frozen encoder, on the 1 (domain, label ratio)"
                        " cells both have: +0.150 AUC on average. At 1 % of the labels fine-tuning reaches the probe"
                        " on 1 of 1 target domain(s).")


def test_finetuned_probe_line_counts_the_domains_at_the_highest_ratio():
    probes = pd.DataFrame({"domain": ["nih", "nih", "vindr", "shenzhen", "covid_t1"],
                           "ratio": [0.01, 1.0, 1.0, 1.0, 1.0], "mean_auc": [0.60, 0.74, 0.70, 0.80, 0.65]})
    ft = pd.DataFrame({"domain": ["nih", "nih", "vindr", "shenzhen", "covid_t1", "covid_t2"],
                       "ratio": [0.01, 1.0, 1.0, 1.0, 1.0, 1.0],
                       "finetuned_mean_auc": [0.62, 0.7396, 0.65, 0.81, 0.6499, 0.9]})
    line = finetuned_probe_line(probes, ft)
    # nih 1.0: -0.0004 rounds to -0.000 -> reaches it at the tables' precision; covid_t1 -0.0001 too;
    # vindr -0.05 does not; covid_t2 has no probe; the 1 % cell counts in the mean only
    assert line == ("* Fine-tuning against the probe of the same frozen encoder, on the 5 (domain, label ratio) cells"
                    " both have: -0.004 AUC on average. At 100 % of the labels fine-tuning reaches the probe on 3 of"
                    " 4 target domain(s); below it on vindr -0.050.")
    assert finetuned_probe_line(probes, ft[ft.domain == "covid_t2"]) is None


def test_beyond_verdict_when_task2_sat_at_chance():
    n = 200
    ev = _evaluation(r1=1 / n, distinct=1, probe_aucs={0.01: 0.6, 0.1: 0.6, 1.0: 0.6}, n=n)
    t2 = task2_log(_log([math.log(16)] * 5), 16)
    lines = beyond_verdict(ev, t2, n_studies=n, decoding="greedy", profile="demo")
    assert lines[0].startswith("* The consistency loss of this pre-training ended at chance (ln 16)")
    assert lines[2].startswith("  The chance range is that of *random* scores.")  # nih lies above it
    assert lines[3].endswith("at random (within what chance gives).")
    assert "one fixed report whatever the images" in lines[4] and "BLEU-1 0.300" in lines[4]
    assert lines[5].endswith("- more labels do not help a linear classifier on these features.")
    assert lines[6] == ("* No fine-tuned results to compare with: the experiment grid of this profile has"
                        " not run (no RUNS_DIR/experiments/demo/results.csv).")


def test_beyond_verdict_says_nothing_about_task2_when_it_is_off():
    ev = _evaluation(r1=0.5, distinct=3, probe_aucs={0.01: 0.6, 0.1: 0.7, 1.0: 0.8})
    t2 = task2_log([{"step": 1, "loss": 1.0}], 16)
    lines = beyond_verdict(ev, t2, n_studies=20, decoding="greedy", profile="smoke")
    assert lines[0].startswith("* Zero-shot:")


def _seeds(domain, aucs):
    """A probe with per-seed mean AUCs: ``aucs``: ratio -> one AUC per seed."""
    return LinearProbeResult(domain, ["a"], [{"ratio": r, "seed": k, "mean_auc": a, "auc": {"a": a}}
                                             for r, per_seed in aucs.items() for k, a in enumerate(per_seed)])


FIVE = ("nih", "vindr", "shenzhen", "covid_t1", "covid_t2")


def _against_random(pre100, rnd100, pre1, rnd1, seeds=3):
    """An Evaluation whose probes (pre-trained and random init) have these means at 100 % and 1 %, over
    ``seeds`` seeds (spread +-0.01 around the mean)."""
    spread = [0.0] if seeds == 1 else list(np.linspace(-0.01, 0.01, seeds))

    def probe(d, m100, m1):
        return _seeds(d, {1.0: [m100 + e for e in spread], 0.01: [m1 + e for e in spread]})
    ev = _evaluation(r1=0.5, distinct=3, probe_aucs={0.01: 0.6, 1.0: 0.8})
    ev.probes = [probe(d, a, b) for d, a, b in zip(FIVE, pre100, pre1)]
    ev.random_probes = [probe(d, a, b) for d, a, b in zip(FIVE, rnd100, rnd1)]
    return ev


def test_random_init_line_counts_the_domains_above_and_the_mean_gain():
    # at 100 %: above on 4 of 5 (shenzhen below); at 1 %: above on 2 (covid_t1 equal, covid_t2 and vindr below)
    ev = _against_random(pre100=[0.80, 0.70, 0.60, 0.75, 0.65], rnd100=[0.70, 0.60, 0.65, 0.70, 0.55],
                         pre1=[0.60, 0.55, 0.62, 0.58, 0.50], rnd1=[0.55, 0.60, 0.52, 0.58, 0.56])
    cmp = random_init_comparison(ev.probe_summary(), ev.random_probe_summary())
    assert [c.ratio for c in cmp] == [1.0, 0.01] and [c.domains for c in cmp] == [5, 5] and cmp[0].seeds == 3
    assert cmp[0].above == ["nih", "vindr", "covid_t1", "covid_t2"] and cmp[1].above == ["nih", "shenzhen"]
    assert cmp[0].gain == pytest.approx((0.10 + 0.10 - 0.05 + 0.05 + 0.10) / 5)
    assert cmp[1].gain == pytest.approx((0.05 - 0.05 + 0.10 + 0.0 - 0.06) / 5)
    lines = beyond_verdict(ev, task2_log([{"step": 1, "loss": 1.0}], 16), n_studies=20, decoding="greedy",
                           profile="demo")
    line = next(ln for ln in lines if ln.startswith("* Pre-trained against random initialisation"))
    assert line == ("* Pre-trained against random initialisation (the same architecture, frozen): the probe at"
                    " 100 % of the labels is higher on 4 of 5 target domains (mean +0.060 AUC); at 1 %: 2 of 5"
                    " (+0.008). The course's target (higher on at least 3 of the 5 target domains, mean over 3"
                    " seeds) at 100 %: **met**.")
    # it sits with the probe lines: after the probes' own line, before fine-tuning
    i = lines.index(line)
    assert lines[i - 1].startswith("* Linear probes:") and lines[i + 1].startswith("* No fine-tuned results")


def test_random_init_line_not_met_and_not_judged():
    # above on 2 of 5 at 100 %: the target is not met
    ev = _against_random(pre100=[0.80, 0.70, 0.60, 0.60, 0.50], rnd100=[0.70, 0.60, 0.65, 0.60, 0.55],
                         pre1=[0.5] * 5, rnd1=[0.6] * 5)
    line = random_init_line(ev.probe_summary(), ev.random_probe_summary())
    assert "higher on 2 of 5 target domains (mean +0.020 AUC); at 1 %: 0 of 5 (-0.100)." in line
    assert line.endswith("at 100 %: **not met**.")
    # with one seed the means do not meet the target's protocol, whatever the count
    one = _against_random(pre100=[0.8] * 5, rnd100=[0.6] * 5, pre1=[0.6] * 5, rnd1=[0.5] * 5, seeds=1)
    line = random_init_line(one.probe_summary(), one.random_probe_summary())
    assert "higher on 5 of 5" in line and line.endswith("not judged, the means here are over 1 seed(s).")
    # three domains above out of three evaluated meet it; two of two do not, and say how many were evaluated
    few = _against_random(pre100=[0.8] * 5, rnd100=[0.6] * 5, pre1=[0.6] * 5, rnd1=[0.5] * 5)
    few.probes, few.random_probes = few.probes[:3], few.random_probes[:3]
    assert random_init_line(few.probe_summary(), few.random_probe_summary()).endswith("**met**.")
    few.probes = few.probes[:2]
    line = random_init_line(few.probe_summary(), few.random_probe_summary())
    assert "higher on 2 of 2 target domains" in line and line.endswith("**not met** (2 domain(s) evaluated).")


def test_no_random_init_line_without_random_probes():
    ev = _evaluation(r1=0.5, distinct=3, probe_aucs={0.01: 0.6, 0.1: 0.7, 1.0: 0.8})
    lines = beyond_verdict(ev, task2_log([{"step": 1, "loss": 1.0}], 16), n_studies=20, decoding="greedy",
                           profile="smoke")
    assert not any("random initialisation" in ln for ln in lines)
