"""The verdict sentences of the chapters, computed from the result numbers (never written in advance).

* :func:`table1_verdict`: chapter 05, REFERS against the best other method in each column of Table 1
  (per-seed mean AUCs, two-sided t-test, significant at ``p < ALPHA``).
* :func:`ablation_verdict`: chapter 07, full REFERS against each variant of Table 3.
* :func:`task2_log`: chapters 05 and 08, whether the consistency loss (Eq. 2) of a pre-training ended
  at chance, ln B, in its training log.
* :func:`zero_shot_ranges` and :func:`beyond_verdict`: chapter 08, zero-shot, retrieval, the reports
  written, the linear probes against the same architecture at random initialisation
  (:func:`random_init_line`) and against the fine-tuned models.

Each returns the numbers it judged beside the sentences, so a test (or a reader) can check one against
the other. The sentences are Markdown bullet lines; the chapters display them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .metrics import compare_to_best_baseline, t_test

ALPHA = 0.05  # the significance level of every verdict (the paper's)


def _labels(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    """Method name -> the label the tables print (default: ``refers_lite.experiments.METHODS``)."""
    if labels is not None:
        return labels
    from ..experiments import METHODS  # imported late: torch and the training code

    return {name: m.label for name, m in METHODS.items()}


def seed_aucs(results: pd.DataFrame, method: str, domain: str, ratio: float) -> np.ndarray:
    """The mean test AUC of each seed of one cell of the grid (``results.csv`` holds one row per class;
    ``mean_auc`` repeats on each)."""
    sel = results[
        (results.method == method) & (results.domain == domain) & np.isclose(results.ratio, ratio)
    ]
    return sel.groupby("seed").mean_auc.first().to_numpy()


def per_seed_table(results: pd.DataFrame, domain: str, ratio: float) -> pd.DataFrame:
    """Seeds x methods: the mean test AUC of each seed of each method in one column (domain, ratio)."""
    return (
        results[(results.domain == domain) & np.isclose(results.ratio, ratio)]
        .groupby(["method", "seed"])
        .mean_auc.first()
        .unstack("method")
    )


# -- chapter 05: Table 1 ---------------------------------------------------------------------------
@dataclass
class Table1Verdict:
    table: pd.DataFrame  # one row per column of Table 1: REFERS, the best other method, difference, p
    lines: list[str]

    @property
    def markdown(self) -> str:
        return "\n".join(self.lines)


def table1_verdict(results: pd.DataFrame, columns: Sequence[Sequence], methods: Sequence[str], *,
                   task2_at_chance: bool = False, labels: Mapping[str, str] | None = None,
                   alpha: float = ALPHA, above_chance: float = 0.55) -> Table1Verdict:
    """For each column (domain, ratio): REFERS against the other method with the highest mean AUC, with
    the two-sided t-test over seeds; the sentences count the columns where REFERS is significantly
    better (difference > 0 and p < ``alpha``), give the difference at 1 % of the labels, and say when
    Task 2 sat at chance or no column has REFERS above ``above_chance`` AUC."""
    labels = _labels(labels)
    rows = []
    for domain, ratio in [tuple(c) for c in columns]:
        ours = seed_aucs(results, "refers", domain, ratio)
        others = {m: seed_aucs(results, m, domain, ratio) for m in methods if m != "refers"}
        cmp = compare_to_best_baseline({"refers": ours, **others}, "refers", list(others))  # the paper's p-value row
        best, p = cmp["best_baseline"], cmp["p_value"]
        rows.append({
            "column": f"{domain} {ratio:.0%}",
            "REFERS": ours.mean(),
            "best other": labels[best],
            "its AUC": others[best].mean(),
            "difference": ours.mean() - others[best].mean(),
            "p": p,
            "REFERS above chance": ours.mean() > above_chance,
        })
    table = pd.DataFrame(rows).set_index("column")
    wins = table[(table.difference > 0) & (table.p < alpha)]
    lines = [
        f"* REFERS is significantly better than the best other method (p < {alpha:g}) in {len(wins)}"
        f" of {len(table)} columns" + (f": {', '.join(wins.index)}." if len(wins) else ".")
    ]
    low = table[table.index.str.contains("1%")]
    if len(low):
        lines.append(f"* At 1 % of the labels the difference is {low.difference.iloc[0]:+.3f} AUC.")
    if task2_at_chance:
        lines.append(
            "* The pre-training log above shows Task 2 at chance (ln B): the study–report consistency "
            "did not learn in this run, so any benefit can only come from report generation (Task 1)."
        )
    if not table["REFERS above chance"].any():
        lines.append(
            "* No column is clearly above chance (AUC 0.5) for REFERS: at this profile's size the "
            "fine-tuning does not learn the target task from this encoder. See the results page of "
            "the book for why, and what the paper-sized run changes."
        )
    return Table1Verdict(table, lines)


# -- chapter 07: Table 3 ---------------------------------------------------------------------------
@dataclass
class AblationVerdict:
    lines: list[str]  # one bullet per variant: above / below full REFERS, p, significant or not
    spread: str  # the largest gap between variants against the largest spread over seeds
    near_chance: str | None  # a warning when even the best variant is close to chance

    @property
    def markdown(self) -> str:
        return "\n".join(self.lines)


def ablation_verdict(per_seed: pd.DataFrame, order: Sequence[str], *,
                     labels: Mapping[str, str] | None = None, alpha: float = ALPHA,
                     near_chance_below: float = 0.6) -> AblationVerdict:
    """Full REFERS (column ``refers`` of ``per_seed``, seeds x methods) against each other method of
    ``order``: the difference of the means over seeds and the two-sided t-test."""
    labels = _labels(labels)
    ref = per_seed["refers"].to_numpy()
    lines = []
    for m in order:
        if m == "refers":
            continue
        p = t_test(ref, per_seed[m].to_numpy()) if len(ref) > 1 else float("nan")
        diff = ref.mean() - per_seed[m].mean()
        verdict = f"significant (p < {alpha:g})" if p < alpha else "not significant"
        lines.append(
            f"* full REFERS {'above' if diff > 0 else 'below'} **{labels[m]}** by"
            f" {abs(diff):.3f} AUC; p = {p:.3g}, {verdict}."
        )
    means = per_seed[list(order)].mean()
    spread = (
        f"largest gap between variants: {means.max() - means.min():.3f} AUC; largest std over seeds:"
        f" {per_seed[list(order)].std(ddof=0).max():.3f}"
    )
    best = means.max()
    # below 0.6, a classifier barely separates the classes: the comparison is between near-chance models
    near = None
    if best < near_chance_below:
        near = (
            f"**Every variant scores at most {best:.3f} test AUC here**, close to chance (0.5): the"
            " fine-tuned models barely separate the classes, so a significant p-value above"
            " compares how the runs failed, not what each removed part contributes (chapter 05 and"
            " *Why the demo does not show the paper's effect* say why)."
        )
    return AblationVerdict(lines, spread, near)


# -- chapters 05 and 08: did Task 2 learn? ---------------------------------------------------------
@dataclass
class Task2Log:
    batch_size: int
    last: float | None  # mean consistency loss of the last logged training steps; None: Task 2 off
    at_chance: bool | None  # within rel_tol of ln B; None: Task 2 off
    val_last: float | None = None  # the last validation consistency loss, if logged

    @property
    def chance(self) -> float:
        return math.log(self.batch_size)

    def short(self) -> str:
        """One line (chapter 05)."""
        if self.last is None:
            return "this run has no consistency loss (Task 2 off)"
        return (f"last training consistency loss {self.last:.4f} vs chance {self.chance:.4f}: "
                f"{'at chance' if self.at_chance else 'below chance'}")

    def report(self) -> list[str]:
        """The lines chapter 08 prints: the last loss against chance, and held-out when it is below."""
        B, chance = self.batch_size, self.chance
        if self.last is None:
            return ["this run has no consistency loss (Task 2 off)"]
        out = [
            f"consistency loss over the last logged steps: {self.last:.4f}; chance ln(B) = ln({B}) ="
            f" {chance:.4f}",
            "-> the consistency loss ended at chance: Task 2 did not learn to pair studies with"
            " reports in this run"
            if self.at_chance
            else f"-> {chance - self.last:.3f} nats below chance on its *training* batches",
        ]
        # below chance in training alone can be memorising the training pairs
        if self.val_last is not None and not self.at_chance:
            v = self.val_last
            out.append(
                f"validation consistency loss at the end: {v:.4f} (chance about ln({B}) ="
                f" {chance:.4f}): "
                + (
                    "below chance on held-out studies too"
                    if v < 0.99 * chance
                    else "not below chance on held-out studies: the training pairs are partly"
                    " memorised; the held-out retrieval below says how much carries over"
                )
            )
        return out


def task2_log(records: Sequence[Mapping], batch_size: int, rel_tol: float = 0.02,
              last_steps: int = 5) -> Task2Log:
    """Whether the mean consistency loss of the last ``last_steps`` logged training steps lies within
    ``rel_tol`` x ln B of chance, ln B (``records``: a run's ``metrics.jsonl``, read_metrics)."""
    train = [r for r in records if "loss_consistency" in r]
    if not train:
        return Task2Log(batch_size, None, None)
    last = float(np.mean([r["loss_consistency"] for r in train[-last_steps:]]))
    chance = math.log(batch_size)
    val = [r for r in records if "val_loss_consistency" in r]
    # a Python bool, not numpy's: chapter 08 tests `at_chance is False` (a numpy False is not `False`, so
    # the chapter's own code never printed its "ended below chance" sentence)
    return Task2Log(batch_size, last, bool(abs(last - chance) < rel_tol * chance),
                    float(val[-1]["val_loss_consistency"]) if val else None)


# -- chapter 08: the joint space, the reports and the probes -----------------------------------------
@dataclass
class ZeroShotRanges:
    above: list[str] = field(default_factory=list)  # domains whose mean AUC is above chance's range
    inside: list[str] = field(default_factory=list)
    below: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"above the chance range: {self.above or 'none'}; inside it: {self.inside or 'none'};"
                f" below it: {self.below or 'none'}")


def zero_shot_ranges(zero_shot: Sequence) -> ZeroShotRanges:
    """The domains whose zero-shot mean AUC (``z.mean_auc``) lies above, inside or below the 95 % range
    of random scores (``z.chance``); a NaN mean counts as inside."""
    above = [z.domain for z in zero_shot if np.isfinite(z.mean_auc) and z.mean_auc > z.chance[1]]
    below = [z.domain for z in zero_shot if np.isfinite(z.mean_auc) and z.mean_auc < z.chance[0]]
    inside = [z.domain for z in zero_shot if z.domain not in above + below]
    return ZeroShotRanges(above, inside, below)


def beyond_verdict(ev, task2: Task2Log, n_studies: int, decoding: str, profile: str) -> list[str]:
    """Chapter 08's verdict on an :class:`~refers_lite.evaluation.evaluate.Evaluation` ``ev``: Task 2
    at chance or not, zero-shot against chance's range, Recall@1 against the 95 % range of a random
    ranking over ``n_studies``, the reports of ``decoding`` (BLEU, ROUGE-L, clinical F1, how many
    distinct), the linear probes at 1 % and 100 %, the probes against random initialisation (where ``ev`` has
    them) and fine-tuning against the probes."""
    from .retrieval import chance_interval

    lines = []
    collapsed, B = task2.at_chance, task2.batch_size
    if collapsed:
        lines.append(
            f"* The consistency loss of this pre-training ended at chance (ln {B}): its joint space"
            " was not trained to pair studies with reports, so zero-shot and retrieval are expected"
            " near chance."
        )
    elif collapsed is False:
        lines.append(
            "* The consistency loss of this pre-training ended below chance: Task 2 learned"
            " something on the training studies."
        )
    if ev.zero_shot:
        zr = zero_shot_ranges(ev.zero_shot)
        m = np.nanmean([z.mean_auc for z in ev.zero_shot])
        lines.append(
            f"* Zero-shot: mean AUC over the {len(ev.zero_shot)} domains {m:.3f}; above the chance"
            f" range on {len(zr.above)} ({', '.join(zr.above) or 'none'}), inside it on"
            f" {len(zr.inside)}, below it on {len(zr.below)}."
        )
        if collapsed and (zr.above or zr.below):
            lines.append(
                "  The chance range is that of *random* scores. With Task 2 at chance, the score is"
                " still a fixed direction (t+ - t-) in a space of image features that differ from"
                " image to image, so it can rank a domain's images away from 0.5 in either direction"
                " without the space being aligned with the prompts: a domain outside the range is"
                " not, here, evidence that the model reads the prompt."
            )
    if ev.retrieval is not None:
        r1, rnd = ev.retrieval.image_to_report[1], ev.retrieval.random[1]
        hi = chance_interval(1, n_studies)[1]
        lines.append(
            f"* Retrieval: image -> report Recall@1 {r1:.3f} against {rnd:.3f} at random "
            + ("(above the 95 % range of chance)." if r1 > hi else "(within what chance gives).")
        )
    if ev.quality is not None:
        g = ev.quality.loc[decoding]
        lines.append(
            f"* Reports ({decoding}): BLEU-4 {g['BLEU-4']:.3f}, ROUGE-L {g['ROUGE-L']:.3f},"
            f" clinical macro F1 {g['clinical F1 (macro)']:.3f}, {int(g['distinct reports'])}"
            f" distinct report(s) for {n_studies} studies"
            + (
                ": one fixed report whatever the images, so nothing in it is read from them."
                f" Whatever BLEU (BLEU-1 {g['BLEU-1']:.3f}) and ROUGE-L give it comes from phrases"
                " it shares with reports in general, which is why the clinical F1 and the count of"
                " distinct reports stand beside them."
                if g["distinct reports"] == 1
                else "."
            )
        )
    if ev.probes:
        lines += _probe_lines(ev, profile)
    return lines


# the course's target for the frozen encoder (issue 16): its probe above the same architecture at random
# initialisation on at least this many of the five target domains, each a mean over at least this many seeds
PROBE_BAR_DOMAINS, PROBE_BAR_OF, PROBE_BAR_SEEDS = 3, 5, 3


@dataclass
class RandomInitComparison:
    ratio: float
    domains: int  # the domains both probes have at this ratio
    above: list[str]  # those where the pre-trained probe's mean AUC is higher
    gain: float  # pre-trained minus random init, mean over the domains
    seeds: int  # the fewest seeds behind any of the means


def random_init_comparison(probes: pd.DataFrame, random_probes: pd.DataFrame) -> list[RandomInitComparison]:
    """Per label ratio both have (highest first): on which domains the pre-trained probe's mean test AUC
    (``Evaluation.probe_summary``) is above the random-init probe's (``random_probe_summary``), and the mean gain."""
    both = probes.merge(random_probes, on=["domain", "ratio"], suffixes=("", "_random"))
    out = []
    for ratio, g in sorted(both.groupby("ratio"), key=lambda kv: -kv[0]):
        diff = g["mean_auc"] - g["mean_auc_random"]
        out.append(RandomInitComparison(float(ratio), len(g), g.loc[diff > 0, "domain"].tolist(),
                                        round(float(diff.mean()), 10) or 0.0,  # no "-0.000" from rounding noise
                                        int(min(g["seeds"].min(), g["seeds_random"].min()))))
    return out


def _pct(ratio: float) -> str:
    return f"{100 * ratio:g} %"


def random_init_line(probes: pd.DataFrame, random_probes: pd.DataFrame) -> str:
    """The verdict line on the pre-trained probe against the random-init probe: at the highest ratio both have
    (100 %) and at the lowest (1 %), on how many domains it is higher and by how much on average, and whether
    the course's target (:data:`PROBE_BAR_DOMAINS` of :data:`PROBE_BAR_OF` domains, mean over
    :data:`PROBE_BAR_SEEDS` seeds, judged at the highest ratio) is met."""
    cmp = random_init_comparison(probes, random_probes)
    if not cmp:
        return "* Pre-trained against random initialisation: no (domain, label ratio) has both probes."
    hi, lo = cmp[0], (cmp[-1] if len(cmp) > 1 else None)
    line = (
        "* Pre-trained against random initialisation (the same architecture, frozen): the probe at"
        f" {_pct(hi.ratio)} of the labels is higher on {len(hi.above)} of {hi.domains} target domains"
        f" (mean {hi.gain:+.3f} AUC)"
        + (f"; at {_pct(lo.ratio)}: {len(lo.above)} of {lo.domains} ({lo.gain:+.3f})." if lo is not None else ".")
    )
    target = (f" The course's target (higher on at least {PROBE_BAR_DOMAINS} of the {PROBE_BAR_OF} target"
              f" domains, mean over {PROBE_BAR_SEEDS} seeds) at {_pct(hi.ratio)}: ")
    if hi.seeds < PROBE_BAR_SEEDS:
        return line + target + f"not judged, the means here are over {hi.seeds} seed(s)."
    if len(hi.above) >= PROBE_BAR_DOMAINS:
        return line + target + "**met**."
    return line + target + "**not met**" + (
        f" ({hi.domains} domain(s) evaluated)." if hi.domains < PROBE_BAR_OF else ".")


def finetuned_probe_line(probes: pd.DataFrame, finetuned: pd.DataFrame) -> str | None:
    """Fine-tuning against the linear probe of the same frozen encoder (the course's target: fine-tuning reaches at
    least the probe on every target domain): per (domain, label ratio) both have, the fine-tuned mean test AUC
    (``evaluate.finetuned_auc``) minus the probe's; at the highest ratio, the domains where fine-tuning reaches the
    probe (a difference >= 0 at the three decimals the tables show) and the domains where it does not, by how
    much. None when they share no cell."""
    both = probes.merge(finetuned, on=["domain", "ratio"])
    if not len(both):
        return None
    both = both.assign(diff=both["finetuned_mean_auc"] - both["mean_auc"])
    top = both[np.isclose(both["ratio"].astype(float), both["ratio"].astype(float).max())]
    reach = top["diff"].round(3) >= 0
    short = ", ".join(f"{d} {x:+.3f}" for d, x in zip(top.loc[~reach, "domain"], top.loc[~reach, "diff"]))
    return (
        f"* Fine-tuning against the probe of the same frozen encoder, on the {len(both)} (domain, label ratio)"
        f" cells both have: {both['diff'].mean():+.3f} AUC on average. At {_pct(float(top['ratio'].iloc[0]))} of"
        f" the labels fine-tuning reaches the probe on {int(reach.sum())} of {len(top)} target domain(s)"
        + (f"; below it on {short}." if short else ".")
    )


def _probe_lines(ev, profile: str) -> list[str]:
    ps = ev.probe_summary()
    lo, hi = ps[ps.ratio == 0.01]["mean_auc"].mean(), ps[ps.ratio == 1.0]["mean_auc"].mean()
    n_test = max((len(z.labels) for z in ev.zero_shot), default=None)
    lines = [
        f"* Linear probes: mean AUC over domains {lo:.3f} at 1 % of the labels, {hi:.3f} at 100 % "
        + (
            "- the frozen features carry information a linear classifier can use once it has"
            " enough labels."
            if hi > lo + 0.02
            else "- more labels do not help a linear classifier on these features."
        )
        + (
            f" With test splits this small (at most {n_test} images), that is noise either way."
            if n_test is not None and n_test < 50
            else ""
        )
    ]
    if getattr(ev, "random_probes", None):
        lines.append(random_init_line(ps, ev.random_probe_summary()))
    if ev.finetuned is not None and len(ev.finetuned):
        line = finetuned_probe_line(ps, ev.finetuned)
        if line:
            lines.append(line)
    else:
        lines.append(
            "* No fine-tuned results to compare with: the experiment grid of this profile has not"
            f" run (no RUNS_DIR/experiments/{profile}/results.csv)."
        )
    return lines
