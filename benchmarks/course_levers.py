"""Which levers make REFERS learn at course scale? Each variant pre-trains on the rendered IU source domain
and is measured on held-out studies (``refers_lite.training.learning_checks``):

* validation consistency loss (Eq. 2) beside chance (ln b per batch),
* validation image -> report Recall@10 over the distinct report texts, beside its chance K / distinct,
* mean pairwise cosine of the validation studies' v^k (collapse: near 1), the share of their energy in a vector
  common to all and the effective rank of the rest (``learning_checks.common_part``), beside the same at the
  run's initial weights,
* a linear probe of the frozen image encoder on the rendered findings (test split), beside the same
  architecture at random initialisation (seed 0 initial weights, as the run starts).

Every variant is the REFERS of the experiment grid at ``demo`` (``Grid.pretrain_config``: source domain) set back
to the *former* demo recipe (``FORMER_DEMO``: the paper's choices at the demo's size, with its augmentation,
flips and side-swapped reports included), plus the overrides below. ``conv_simple_r3`` (``conv_simple`` with three
renders of every report) with a fixed tau = 0.2 (``conv_simple_r3_tau02``) is the course recipe the ``demo``
profile now uses. Results are appended to
``--out/levers.jsonl``, one line per variant and step budget, so the book's table (``book/demo_diagnosis.md``)
comes from this file.

    OMP_NUM_THREADS=2 python benchmarks/course_levers.py --variants demo proj conv conv_proj --steps 400
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from refers_lite.config import deep_update
from refers_lite.data.loading.source_studies import SourceStudies
from refers_lite.experiments import METHODS, Grid
from refers_lite.training.learning_checks import consistency_chance, source_probe, study_report_checks
from refers_lite.training.pretrain import Pretrainer

# What the demo profile was before it took the course recipe (``conv_simple``): the paper's stem, no projection
# head, MiniLM's last 2 layers trained, 64-token reports, 16 studies a batch, the paper's augmentation and flips, one
# film per report.
FORMER_DEMO = {"model": {"stem": "patch", "study_projection": "none", "text_freeze_layers": 4, "text_max_len": 64},
               "train": {"batch_size": 16, "lr_text": 3e-4}, "loss": {"temperature": 0.1},
               "data": {"augment": True, "hflip_prob": 0.5, "renders": 1}}

VARIANTS = {
    "demo": {},  # the demo recipe as it was
    "proj": {"model": {"study_projection": "mlp"}},
    "conv": {"model": {"stem": "conv"}},
    "conv_proj": {"model": {"stem": "conv", "study_projection": "mlp"}},
    "conv_proj_tau": {"model": {"stem": "conv", "study_projection": "mlp"}, "loss": {"learn_temperature": True}},
    "conv_proj_not1": {"model": {"stem": "conv", "study_projection": "mlp"}, "loss": {"use_generation": False}},
    "resnet_proj": {"model": {"encoder": "resnet18", "study_projection": "mlp"}},
    "conv_proj_b32": {"model": {"stem": "conv", "study_projection": "mlp"}, "train": {"batch_size": 32}},
    # the whole text backbone frozen (its features remembered: steps several times cheaper), batch 64
    "frozen_text": {"model": {"text_freeze_layers": 6}},
    "conv_proj_ft": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6}},
    "conv_proj_ft_b64": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6},
                         "train": {"batch_size": 64}},
    "conv_ft_b64": {"model": {"stem": "conv", "text_freeze_layers": 6}, "train": {"batch_size": 64}},
    "proj_ft_b64": {"model": {"study_projection": "mlp", "text_freeze_layers": 6}, "train": {"batch_size": 64}},
    # Task 2 alone (no report generation), to see which encoder can learn it at all
    "resnet_t2": {"model": {"encoder": "resnet18", "study_projection": "mlp", "text_freeze_layers": 6},
                  "loss": {"use_generation": False}, "train": {"batch_size": 64}},
    "conv_t2": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6},
                "loss": {"use_generation": False}, "train": {"batch_size": 64}},
    "conv_t2_noaug": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6},
                      "loss": {"use_generation": False}, "train": {"batch_size": 64},
                      "data": {"augment": False, "hflip_prob": 0.0}},
    # the simple check's conditions: no augmentation, the text side at the image side's learning rate, reports
    # not cut at 64 tokens
    "resnet_t2_simple": {"model": {"encoder": "resnet18", "study_projection": "mlp", "text_freeze_layers": 6,
                                   "text_max_len": 128},
                         "loss": {"use_generation": False},
                         "train": {"batch_size": 64, "lr_text": 1e-3}, "data": {"augment": False, "hflip_prob": 0.0}},
    # the same conditions, the radiograph transformer with a convolutional stem, both tasks (REFERS)
    "conv_simple": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6, "text_max_len": 128},
                    "train": {"batch_size": 64, "lr_text": 1e-3}, "data": {"augment": False, "hflip_prob": 0.0}},
    # conv_simple against memorising: the paper's flip (side-swapped reports) only, stochastic depth, AdamW's usual decay
    "conv_flip_reg": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6, "text_max_len": 128,
                                "drop_path": 0.1},
                      "train": {"batch_size": 64, "lr_text": 1e-3, "weight_decay": 0.05},
                      "data": {"augment": False, "hflip_prob": 0.5}},
    "resnet_proj_ft_b64": {"model": {"encoder": "resnet18", "study_projection": "mlp", "text_freeze_layers": 6},
                           "train": {"batch_size": 64}},
    # conv_simple against memorising: every report paired with 3 films (other patients, lesion draws, acquisitions;
    # the domain built with `refers-lite data build --renders 3`)
    "conv_simple_r3": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6,
                                 "text_max_len": 128},
                       "train": {"batch_size": 64, "lr_text": 1e-3},
                       "data": {"augment": False, "hflip_prob": 0.0, "renders": 3}},
    # conv_simple_r3 with twice the learning rate of both sides, or a learned temperature (CLIP's)
    "conv_simple_r3_lr2": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6,
                                     "text_max_len": 128},
                           "train": {"batch_size": 64, "lr_vision": 2e-3, "lr_text": 2e-3},
                           "data": {"augment": False, "hflip_prob": 0.0, "renders": 3}},
    "conv_simple_r3_tau": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6,
                                     "text_max_len": 128},
                           "train": {"batch_size": 64, "lr_text": 1e-3}, "loss": {"learn_temperature": True},
                           "data": {"augment": False, "hflip_prob": 0.0, "renders": 3}},
    # conv_simple_r3 with a fixed, softer temperature (tau = 0.2 instead of 0.1): logits half as confident
    "conv_simple_r3_tau02": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6,
                                       "text_max_len": 128},
                             "train": {"batch_size": 64, "lr_text": 1e-3}, "loss": {"temperature": 0.2},
                             "data": {"augment": False, "hflip_prob": 0.0, "renders": 3}},
    # the course recipe with Eq. 2 on v^k itself, as the paper has it (no projection head): does the aggregation
    # embedding then spread (its mean cosine between studies stays near 0.999 under the head)?
    "conv_simple_r3_tau02_nohead": {"model": {"stem": "conv", "study_projection": "none", "text_freeze_layers": 6,
                                              "text_max_len": 128},
                                    "train": {"batch_size": 64, "lr_text": 1e-3}, "loss": {"temperature": 0.2},
                                    "data": {"augment": False, "hflip_prob": 0.0, "renders": 3}},
    # both: the head's Eq. 2 (what the head learns) plus Eq. 2 on v^k itself (the paper's form) at the same weight,
    # against the same t^k: does v^k then spread (cosine < 0.9) without losing what the head learns?
    "conv_simple_r3_tau02_vk": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6,
                                          "text_max_len": 128},
                                "train": {"batch_size": 64, "lr_text": 1e-3},
                                "loss": {"temperature": 0.2, "vk_consistency_weight": 1.0},
                                "data": {"augment": False, "hflip_prob": 0.0, "renders": 3}},
    # the same at a tenth of the weight: enough to shed v^k's common part, little enough to keep the head's learning?
    "conv_simple_r3_tau02_vk01": {"model": {"stem": "conv", "study_projection": "mlp", "text_freeze_layers": 6,
                                            "text_max_len": 128},
                                  "train": {"batch_size": 64, "lr_text": 1e-3},
                                  "loss": {"temperature": 0.2, "vk_consistency_weight": 0.1},
                                  "data": {"augment": False, "hflip_prob": 0.0, "renders": 3}},
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_refers_precision(run_dir: Path) -> str:
    """The precision the run trained in (its summary; a stopped run has none: what ``auto`` picks here)."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text()).get("precision", "?")
    from refers_lite.config import Config
    from refers_lite.training.runtime import resolve_device, resolve_precision
    t = Config.load(run_dir / "config.json").train
    return resolve_precision(t.precision, resolve_device(t.device)).name


def lever_grid(name: str, data_root: Path, steps: int, out: Path) -> Grid:
    """The experiment grid whose REFERS pre-training is this variant at this budget: the run lands in
    ``out/pretrain/refers-<hash of its config>`` with its exported ``encoder.pt``, so that
    ``refers_lite.experiments.run_experiments(..., out=out, pretrain_overrides=...)`` fine-tunes it as it is."""
    over = deep_update({"train": {"max_steps": steps, "warmup_steps": max(1, steps // 10),
                                  "val_every": max(1, steps // 4)}}, json.loads(json.dumps(FORMER_DEMO)))
    deep_update(over, json.loads(json.dumps(VARIANTS[name])))
    return Grid("demo", data_root, out, ("refers",), (), (), pretrain_overrides=over)


def run(name: str, data_root: Path, steps: int, out: Path, probe: bool, stopped: Path | None = None) -> dict:
    """Train the variant (or resume / read back its run) and measure it. ``stopped``: do not train; measure the
    ``best.pt`` of that folder, a run of this variant stopped before ``steps`` (its steps are recorded)."""
    from refers_lite.training.checkpoint import export_image_encoder, load_refers
    from refers_lite.experiments import _digest
    grid = lever_grid(name, data_root, steps, out)
    cfg = grid.pretrain_config(METHODS["refers"])
    root = Path(cfg.data.root)
    train = SourceStudies(root, "train", max_report_len=cfg.model.max_report_len, renders=cfg.data.renders)
    val = SourceStudies(root, "validation", max_report_len=cfg.model.max_report_len,
                        report_tokenizer=train.report_tokenizer)
    run_dir = stopped or out / "pretrain" / f"refers-{_digest(cfg.identity())}"
    t0 = time.time()
    if stopped is None:
        trainer = Pretrainer(cfg, train, val, run_dir, progress=False)
        result = trainer.fit(resume=True)  # a finished run is read back, an interrupted one resumes
        best = result.best_checkpoint or result.last_checkpoint
        export_image_encoder(best, run_dir / "encoder.pt")
    else:
        best = run_dir / "best.pt"
    seconds = time.time() - t0
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    va = [r for r in recs if "val_loss_consistency" in r]
    done = max(r["step"] for r in recs)
    read_back = stopped is not None or seconds < 0.01 * done  # stopped, or a finished run read back, not trained
    if read_back:  # the time it ran: the logged steps' durations
        seconds = sum(r.get("sec_per_step", 0) * cfg.train.log_every for r in recs)
    model, _ = load_refers(best)  # what fine-tuning receives
    model.eval()
    batch = min(cfg.train.batch_size, len(val))
    res = {"variant": name + (f" (stopped at {done})" if stopped and done < steps else ""), "overrides": VARIANTS[name],
           "run": str(run_dir), "steps": done, "batch": cfg.train.batch_size,
           "epochs": round(done * cfg.train.batch_size / train.n_studies, 2),  # passes over the reports
           "train_seconds": round(seconds, 1),
           "precision": load_refers_precision(run_dir), "cpu": cpu_name(), "threads": torch.get_num_threads(),
           "val consistency": va[-1]["val_loss_consistency"] if va else float("nan"),
           "val consistency chance": consistency_chance(len(val), batch),
           "val consistency curve": [(r["step"], round(r["val_loss_consistency"], 4)) for r in va],
           "val generation": va[-1].get("val_loss_generation", float("nan")) if va else float("nan")}
    res.update(study_report_checks(model, cfg, val))
    from refers_lite.evaluation.evaluate import initial_model
    initial = initial_model(cfg)  # the run's initial weights
    at_init = study_report_checks(initial, cfg, val)  # the same checks at the run's initial weights
    res.update({f"{k} random init": at_init[k] for k in ("cosine v", "common share v", "effective rank v")})
    if probe:
        pre = source_probe(model.encoder, root, cfg.model.image_size)
        rand = source_probe(initial.encoder, root, cfg.model.image_size)
        res.update({"probe AUC": pre["mean AUC"], "probe AUC random init": rand["mean AUC"],
                    "probe per finding": pre["per finding"], "probe random per finding": rand["per finding"]})
    res["total_seconds"] = round(time.time() - t0 + (seconds if read_back else 0), 1)  # training + checks
    return res


DOMAINS = ("nih", "vindr", "shenzhen", "covid_t1", "covid_t2")


def target_probes(name: str, data_root: Path, steps: int, out: Path, seeds=(0, 1, 2)) -> dict:
    """Linear probes (100 % of the labels) of the variant's exported encoder and of the same architecture at
    random initialisation on the five target domains; test mean AUC, mean over ``seeds`` (the probe's subsets
    are the whole training split at 100 %, so the seeds differ only where a domain's subsets do)."""
    from refers_lite.experiments import _digest
    from refers_lite.evaluation.evaluate import initial_encoder
    from refers_lite.evaluation.linear_probe import linear_probe
    grid = lever_grid(name, data_root, steps, out)
    cfg = grid.pretrain_config(METHODS["refers"])
    encoder = out / "pretrain" / f"refers-{_digest(cfg.identity())}" / "encoder.pt"
    random_init = initial_encoder(cfg)  # the run's initial weights
    rows = {}
    for d in DOMAINS:
        pre = linear_probe(encoder, data_root / d, ratios=(1.0, 0.1), seeds=seeds).to_frame()
        rnd = linear_probe(random_init, data_root / d, ratios=(1.0, 0.1), seeds=seeds).to_frame()
        rows[d] = {f"{who} {r:g}": float(f[f["ratio"] == r]["mean_auc"].mean())
                   for who, f in (("pre-trained", pre), ("random init", rnd)) for r in (1.0, 0.1)}
        print(d, {k: round(v, 3) for k, v in rows[d].items()}, flush=True)
    return rows


FINETUNE_COLUMNS = (("nih", 0.01), ("vindr", 0.01), ("nih", 1.0), ("shenzhen", 1.0))


def finetune_effect(name: str, data_root: Path, steps: int, out: Path, finetune: dict, seeds=(0, 1, 2)) -> Path:
    """The paper's comparison at these columns: the variant's REFERS against training from scratch, fine-tuned
    with ``finetune`` overrides of the demo recipe, 3 seeds, the paper's t-test (``run_experiments``' Table 1)."""
    from refers_lite.experiments import run_experiments
    grid = lever_grid(name, data_root, steps, out)
    tag = "-".join(f"{k}={v}" for k, v in sorted(finetune.items())) or "paper-recipe"
    report = out / "finetune" / f"{name}-{steps}-{tag}"
    paths = run_experiments("demo", data_root, out=out, methods=("refers", "scratch"), columns=FINETUNE_COLUMNS,
                            seeds=seeds, pretrain_overrides=grid.pretrain_overrides, finetune_overrides=finetune,
                            progress=False, report_dir=report)
    print(paths["table1"].read_text(), flush=True)
    return paths["table1"]


CURVE_COLUMNS = (("nih", 0.01), ("vindr", 0.01))


def budget_curve(name: str, data_root: Path, budgets, out: Path, seeds=(0, 1, 2)) -> list[dict]:
    """Issue 16's fallback record: for each pre-training budget (steps, each run with its own full schedule), the
    validation checks of :func:`run` and the 1 %-label test AUC of REFERS against scratch (3 seeds, the paper's
    t-test), appended to ``out/budget_curve.jsonl``. Scratch does not depend on the budget: its cells are trained
    once and reused (the grid's cache in ``out``). Budgets already in the file are read back, not re-run."""
    from refers_lite.evaluation.metrics import summarize_seeds, t_test
    from refers_lite.evaluation.verdicts import seed_aucs
    from refers_lite.experiments import run_experiments
    import pandas as pd
    path = out / "budget_curve.jsonl"
    done = {(r["variant"], r["steps"]): r for r in _read_jsonl(path)}
    rows = []
    for steps in budgets:
        if (name, steps) in done:
            rows.append(done[(name, steps)])
            continue
        t0 = time.time()
        r = run(name, data_root, steps, out, probe=True)
        grid = lever_grid(name, data_root, steps, out)
        report = out / "curve" / f"{name}-{steps}"
        report.mkdir(parents=True, exist_ok=True)
        run_experiments("demo", data_root, out=out, methods=("refers", "scratch"), columns=CURVE_COLUMNS, seeds=seeds,
                        pretrain_overrides=grid.pretrain_overrides, progress=False, report_dir=report)
        df = pd.read_csv(report / "results.csv")
        row = {"variant": name, "steps": steps, "epochs": r["epochs"], "cpu": r["cpu"], "threads": r["threads"],
               "val consistency": r["val consistency"], "val consistency chance": r["val consistency chance"],
               "R@10": r["R@10"], "R@10 chance": r["R@10 chance"], "cosine joint": r["cosine joint"],
               "probe AUC": r["probe AUC"], "probe AUC random init": r["probe AUC random init"],
               "pretrain seconds": r["train_seconds"], "total seconds": round(time.time() - t0, 1)}
        for domain, ratio in CURVE_COLUMNS:
            vals = {m: seed_aucs(df, m, domain, ratio).tolist() for m in ("refers", "scratch")}
            for m, v in vals.items():
                s = summarize_seeds(v)
                row[f"{domain} {ratio:g} {m}"] = [round(s.mean, 4), round(s.std, 4)]
            row[f"{domain} {ratio:g} p"] = t_test(vals["refers"], vals["scratch"])
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def curve_table(rows: list[dict]) -> str:
    """The budget curve as the book's table: one row per budget, scratch's cells beside REFERS's."""
    cols = [f"{d} {r:g}" for d, r in CURVE_COLUMNS]
    head = ("| steps (epochs) | val. Eq. 2 below chance | val. R@10 / chance | source probe gain | "
            + " | ".join(f"{c.replace('nih', 'NIH-like').replace('vindr', 'VinBigData-like').replace(' 0.01', ' 1 %')}:"
                         f" REFERS / scratch (p)" for c in cols) + " | minutes |")
    lines = [head, "|" + "---|" * (5 + len(cols))]
    for r in sorted(rows, key=lambda r: r["steps"]):
        cells = [f"{100 * r[c + ' refers'][0]:.1f} ± {100 * r[c + ' refers'][1]:.1f} / "
                 f"{100 * r[c + ' scratch'][0]:.1f} ± {100 * r[c + ' scratch'][1]:.1f} (p = {r[c + ' p']:.2g})"
                 for c in cols]
        lines.append(f"| {r['steps']} ({r['epochs']:.1f}) | {r['val consistency chance'] - r['val consistency']:.3f} | "
                     f"{r['R@10'] / r['R@10 chance']:.1f}x | {r['probe AUC'] - r['probe AUC random init']:+.3f} | "
                     + " | ".join(cells) + f" | {r['total seconds'] / 60:.0f} |")
    return "\n".join(lines)


def curve_figure(rows: list[dict], path: Path) -> Path:
    """Consistency below chance, R@10 over chance and the 1 %-label AUCs (REFERS, and scratch as the budget-0
    line) against the pre-training budget."""
    from matplotlib.figure import Figure
    rows = sorted(rows, key=lambda r: r["steps"])
    x = [r["steps"] for r in rows]
    fig = Figure(figsize=(13, 3.6))
    ax = fig.subplots(1, 3)
    ax[0].plot(x, [r["val consistency chance"] - r["val consistency"] for r in rows], "o-")
    ax[0].axhline(0.5, ls="--", c="grey", label="target: 0.5 below chance")
    ax[0].set_ylabel("val. Eq. 2: nats below ln b")
    ax[1].plot(x, [r["R@10"] / r["R@10 chance"] for r in rows], "o-")
    ax[1].axhline(3, ls="--", c="grey", label="target: 3x chance")
    ax[1].set_ylabel("val. R@10 / chance")
    for (d, ratio), c in zip(CURVE_COLUMNS, ("C0", "C1")):
        key = f"{d} {ratio:g}"
        label = {"nih": "NIH-like", "vindr": "VinBigData-like"}[d]
        ax[2].errorbar(x, [100 * r[key + " refers"][0] for r in rows], [100 * r[key + " refers"][1] for r in rows],
                       marker="o", capsize=3, c=c, label=f"REFERS, {label} 1 %")
        sc = rows[0][key + " scratch"]
        ax[2].axhspan(100 * (sc[0] - sc[1]), 100 * (sc[0] + sc[1]), color=c, alpha=0.12)
        ax[2].axhline(100 * sc[0], c=c, ls=":", label=f"scratch, {label} 1 %")
    ax[2].set_ylabel("test AUC x 100 (3 seeds)")
    for a in ax:
        a.set_xlabel("pre-training steps (batch 64)")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def markdown_table(path: Path) -> str:
    """The book's table of every lever measured (``levers.jsonl``), one row per variant and budget."""
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    head = ("| variant | overrides of the former `demo` | steps x batch (epochs) | val. Eq. 2 (chance ln b) | val. R@10 distinct "
            "texts (chance) | cosine v^k / after the head (v^k's common share, effective rank; the same at random init) "
            "| source probe AUC: "
            "pre-trained / random init | minutes |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        over = ", ".join(f"{sec}.{k}={v}" for sec, kv in r["overrides"].items() for k, v in kv.items()) or "-"
        probe = (f"{r['probe AUC']:.3f} / {r['probe AUC random init']:.3f}" if "probe AUC" in r else "-")
        lines.append(f"| {r['variant']} | {over} | {r['steps']} x {r['batch']} ({r['epochs']:g}) | "
                     f"{r['val consistency']:.3f} ({r['val consistency chance']:.3f}) | {r['R@10']:.3f} "
                     f"({r['R@10 chance']:.3f}, {r['R@10'] / r['R@10 chance']:.1f}x) | {r['cosine v']:.4f} / "
                     f"{r['cosine joint']:.3f}{_common(r)} | {probe} | "
                     f"{r['total_seconds'] / 60:.1f} |")
    return "\n".join(lines)


def _common(r: dict) -> str:
    """v^k's common share and effective rank, trained and at random init, where the row measured them (rows since
    session 10 of 2026-12-08)."""
    if "common share v" not in r:
        return ""
    return (f" ({r['common share v']:.4f}, rank {r['effective rank v']:.1f}; "
            f"{r['common share v random init']:.4f}, rank {r['effective rank v random init']:.1f})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--variants", nargs="+", default=["demo", "conv_proj"], choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/course_levers"))
    ap.add_argument("--table", action="store_true", help="print the markdown table of --out/levers.jsonl and stop")
    ap.add_argument("--stopped", type=Path, default=None,
                    help="measure this run folder of the (single) variant, stopped before --steps, without training")
    ap.add_argument("--target-probes", action="store_true",
                    help="linear probes of the variants' encoders (and random init) on the five target domains")
    ap.add_argument("--finetune", nargs="*", default=None, metavar="KEY=VALUE",
                    help="fine-tune the variants' encoders and scratch (3 seeds) with these overrides of the demo "
                         "fine-tuning recipe, e.g. head_init=probe max_steps=0")
    ap.add_argument("--budget-curve", nargs="+", type=int, default=None, metavar="STEPS",
                    help="the pre-training budget curve of the (single) variant: validation checks and the 1 %%-label "
                         "AUC of REFERS against scratch at each budget; prints the table and draws the figure")
    args = ap.parse_args()
    if args.budget_curve is not None:
        rows = []
        for name in args.variants:
            rows = budget_curve(name, args.data_root, args.budget_curve, args.out)
        print(curve_table(rows))
        print(curve_figure(rows, args.out / "budget_curve.png"))
        return
    if args.finetune is not None:
        over = dict(kv.split("=", 1) for kv in args.finetune)
        for name in args.variants:
            finetune_effect(name, args.data_root, args.steps, args.out, over)
        return
    if args.target_probes:
        for name in args.variants:
            rows = target_probes(name, args.data_root, args.steps, args.out)
            with open(args.out / "target_probes.jsonl", "a") as f:
                f.write(json.dumps({"variant": name, "steps": args.steps, "domains": rows}) + "\n")
        return
    if args.table:
        print(markdown_table(args.out / "levers.jsonl"))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'variant':>16} {'steps':>5} {'val Eq.2':>8} {'chance':>6} {'R@10':>6} {'chance':>6} {'cos v':>6} "
          f"{'probe':>6} {'random':>6} {'s':>5}", flush=True)
    for name in args.variants:
        r = run(name, args.data_root, args.steps, args.out, not args.no_probe, args.stopped)
        with open(args.out / "levers.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"{name:>16} {r['steps']:>5} {r['val consistency']:8.4f} {r['val consistency chance']:6.3f} "
              f"{r['R@10']:6.3f} {r['R@10 chance']:6.3f} {r['cosine v']:6.4f} {r.get('probe AUC', math.nan):6.3f} "
              f"{r.get('probe AUC random init', math.nan):6.3f} {r['total_seconds']:5.0f}", flush=True)


if __name__ == "__main__":
    main()
