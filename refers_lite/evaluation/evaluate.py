"""Beyond REFERS: evaluate a pre-trained run directly, not only through fine-tuning.

The paper judges pre-training by one thing: test AUC after fine-tuning. But the pre-trained model
holds more: a joint image-text space (Task 2, Eq. 2) and a report writer (Task 1, Eq. 1). For one
pre-training run folder (``best.pt``, else ``last.pt``) and a data root (``source/`` and the target
domains, as ``refers-lite data build`` writes them) this runs

* **zero-shot classification** of every target domain's test split (``evaluation/zero_shot.py``);
* **retrieval**, image -> report and report -> image Recall@1/5/10 on the source test split, beside
  the random baseline K / N (``evaluation/retrieval.py``);
* **report generation quality** on the source test split: greedy and beam search, BLEU-1..4,
  ROUGE-L and the clinical finding F1 of the report-text label extractor (``evaluation/report_metrics.py``);
* **linear probes** of the frozen encoder at 1 %, 10 % and 100 % of each domain's training labels
  (``evaluation/linear_probe.py``), and the same probes of the same architecture at **random
  initialisation** (the run's initial weights: ``seed_everything(cfg.train.seed)``, then
  ``REFERS.from_config(cfg)``, as pre-training starts), which separates what pre-training put into the
  features from what any random features give a linear classifier;

and sets the zero-shot and probe AUCs beside the fine-tuned REFERS at the same label ratio when an
experiment grid's ``results.csv`` is given (by default the one of the grid the run belongs to,
``RUN/../../results.csv``, when it exists).

Outputs in ``out`` (default ``RUN/beyond``): ``summary.json`` (every number), ``zero_shot.csv``,
``retrieval.csv``, ``generated_reports.csv``, ``report_quality.csv``, ``clinical_f1.csv``,
``linear_probe.csv``, ``linear_probe_random_init.csv``, ``overview.csv`` and ``beyond.md`` (the tables in
markdown).
"""
from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .linear_probe import LinearProbeResult, linear_probe
from .retrieval import KS, RetrievalResult, retrieval
from .zero_shot import ZeroShotResult, zero_shot_domain

__all__ = ["EVAL_PROFILES", "TARGETS", "Evaluation", "evaluate_run", "finetuned_auc", "initial_encoder", "load_run",
           "to_markdown"]

TARGETS = ("nih", "vindr", "shenzhen", "covid_t1", "covid_t2")
EVAL_PROFILES: dict[str, dict] = {
    # beams: the decodings of report generation (1 = greedy); max_studies: cap on the studies reports are written
    # for (None: the whole test split); probe_seeds: the label-ratio subsets' seeds of the linear probe;
    # random_init_probes: the same probes of the same architecture at random initialisation (the baseline)
    "smoke": dict(beams=(1, 2), max_studies=None, probe_ratios=(0.01, 0.1, 1.0), probe_seeds=(0,), batch_size=32,
                  random_init_probes=True),
    "demo": dict(beams=(1, 3), max_studies=128, probe_ratios=(0.01, 0.1, 1.0), probe_seeds=(0, 1, 2), batch_size=64,
                 random_init_probes=True),
    "gpu": dict(beams=(1, 3), max_studies=None, probe_ratios=(0.01, 0.1, 1.0), probe_seeds=(0, 1, 2), batch_size=128,
                random_init_probes=True),
    "paper": dict(beams=(1, 3), max_studies=None, probe_ratios=(0.01, 0.1, 1.0), probe_seeds=(0, 1, 2),
                  batch_size=128, random_init_probes=True),
}


def load_run(run_dir: str | Path, checkpoint: str | None = None, device: str = "auto"):
    """(model, cfg, checkpoint path) of a pre-training run folder: ``best.pt`` if present, else ``last.pt``."""
    from ..training.checkpoint import load_refers
    from ..training.runtime import resolve_device
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    names = [checkpoint] if checkpoint else ["best.pt", "last.pt"]
    path = next((run / n for n in names if (run / n).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{run}: no pre-training checkpoint ({' or '.join(names)}); pre-train first "
                                f"(`refers-lite pretrain --out {run}`)")
    model, cfg = load_refers(path)
    return model.to(resolve_device(device)).eval(), cfg, path


def finetuned_auc(results, method: str = "refers") -> pd.DataFrame:
    """Mean test AUC of a method's fine-tuned cells per (domain, ratio), over seeds, from an experiment grid's
    ``results.csv`` (a path or its frame): columns domain, ratio, finetuned_mean_auc, finetuned_std, seeds."""
    df = pd.read_csv(results) if isinstance(results, (str, Path)) else results
    need = {"method", "domain", "ratio", "seed", "mean_auc"}
    if need - set(df.columns):
        where = results if isinstance(results, (str, Path)) else "the results frame"
        raise ValueError(f"{where}: missing column(s) {sorted(need - set(df.columns))}; an experiment grid's "
                         f"results.csv has {sorted(need)}")
    cells = df[df["method"] == method].groupby(["domain", "ratio", "seed"])["mean_auc"].first().reset_index()
    g = cells.groupby(["domain", "ratio"])["mean_auc"]
    return pd.DataFrame({"finetuned_mean_auc": g.mean(), "finetuned_std": g.std(ddof=1).fillna(0.0),
                         "seeds": g.count()}).reset_index()


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def to_markdown(df: pd.DataFrame, digits: int = 3, index: bool = True) -> str:
    """A frame as a markdown table, floats to ``digits`` decimals, NaN as '–'."""
    head = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, row in zip(df.index, df.itertuples(index=False)):
        cells = ([str(i)] if index else []) + [_fmt(v, digits) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class Evaluation:
    run_dir: Path
    checkpoint: Path
    profile: str
    zero_shot: list[ZeroShotResult] = field(default_factory=list)
    retrieval: RetrievalResult | None = None
    reports: pd.DataFrame | None = None  # generated_reports: study_id, real, reference, greedy, beamK
    quality: pd.DataFrame | None = None  # one row per decoding
    clinical: dict[str, pd.DataFrame] = field(default_factory=dict)  # decoding -> per-label F1
    probes: list[LinearProbeResult] = field(default_factory=list)
    random_probes: list[LinearProbeResult] = field(default_factory=list)  # the same architecture, random init
    finetuned: pd.DataFrame | None = None
    temperature: float | None = None  # tau of Eq. 2 the joint space used (learned or fixed)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)

    # -- tables -----------------------------------------------------------------------------
    def zero_shot_frame(self) -> pd.DataFrame:
        return pd.concat([z.to_frame() for z in self.zero_shot], ignore_index=True) if self.zero_shot else \
            pd.DataFrame(columns=["domain", "class", "positive_prompt", "negative_prompt", "positives", "images", "auc"])

    def probe_frame(self) -> pd.DataFrame:
        return _frame(self.probes)

    def probe_summary(self) -> pd.DataFrame:
        return _summary(self.probes)

    def random_probe_frame(self) -> pd.DataFrame:
        return _frame(self.random_probes)

    def random_probe_summary(self) -> pd.DataFrame:
        """The random-init probes' mean test AUC over seeds per (domain, ratio), as :meth:`probe_summary`."""
        return _summary(self.random_probes)

    def overview(self) -> pd.DataFrame:
        """One row per target domain: zero-shot mean AUC, linear probe at each ratio, the same probe of the
        architecture at random initialisation (where it ran), fine-tuned REFERS at each ratio (where a grid ran
        it), and chance (0.5)."""
        domains = [z.domain for z in self.zero_shot] + [p.domain for p in self.probes + self.random_probes]
        domains = list(dict.fromkeys(domains))
        zs = {z.domain: z.mean_auc for z in self.zero_shot}
        ps, rs = self.probe_summary(), self.random_probe_summary()
        ft = self.finetuned if self.finetuned is not None else pd.DataFrame(columns=["domain", "ratio",
                                                                                     "finetuned_mean_auc"])
        ratios = sorted(set(ps["ratio"].tolist()) | set(rs["ratio"].tolist())
                        | set(ft[ft["domain"].isin(domains)]["ratio"].tolist()))
        rows = []
        for d in domains:
            row = {"domain": d, "zero-shot": zs.get(d, float("nan"))}
            for name, summ in (("linear probe", ps), ("random-init probe", rs)):
                for r in ratios:
                    sel = summ[(summ["domain"] == d) & np.isclose(summ["ratio"].astype(float), r)]
                    row[f"{name} {r:.0%}"] = float(sel["mean_auc"].iloc[0]) if len(sel) else float("nan")
            for r in ratios:
                sel = ft[(ft["domain"] == d) & np.isclose(ft["ratio"].astype(float), r)]
                row[f"fine-tuned {r:.0%}"] = float(sel["finetuned_mean_auc"].iloc[0]) if len(sel) else float("nan")
            row["chance"] = 0.5
            z = next((z for z in self.zero_shot if z.domain == d), None)
            row["zero-shot chance 95 %"] = "–" if z is None or math.isnan(z.chance[0]) else \
                f"{z.chance[0]:.3f}–{z.chance[1]:.3f}"
            rows.append(row)
        df = pd.DataFrame(rows)
        if len(df):
            df = df.set_index("domain").dropna(axis=1, how="all")
        return df

    def summary(self) -> dict:
        """Every headline number, JSON-ready (NaN as null)."""
        def clean(x):
            if isinstance(x, dict):
                return {str(k): clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            if isinstance(x, (float, np.floating)):
                return None if math.isnan(float(x)) else float(x)
            if isinstance(x, (np.integer,)):
                return int(x)
            return x
        out = {"run": str(self.run_dir), "checkpoint": str(self.checkpoint), "profile": self.profile,
               "temperature": self.temperature,
               "zero_shot": {z.domain: {"mean_auc": z.mean_auc, "chance_95": list(z.chance), "auc": z.auc,
                                        "test_images": len(z.labels),
                                        "prompts": {c: [p.positive, p.negative] for c, p in zip(z.classes, z.prompts)}}
                             for z in self.zero_shot},
               "linear_probe": {p.domain: {f"{row['ratio']:g}": row["mean_auc"] for row in p.summary().to_dict("records")}
                                for p in self.probes},
               "random_init_probe": {p.domain: {f"{row['ratio']:g}": row["mean_auc"]
                                                for row in p.summary().to_dict("records")}
                                     for p in self.random_probes},
               "notes": self.notes, "seconds": self.seconds}
        if self.retrieval is not None:
            r = self.retrieval
            out["retrieval"] = {"split": r.split, "studies": r.n, "distinct_reports": r.distinct_reports,
                                "image_to_report": r.image_to_report, "report_to_image": r.report_to_image,
                                "random": r.random, "median_rank_image_to_report": r.median_rank_i2r,
                                "median_rank_report_to_image": r.median_rank_r2i}
        if self.quality is not None:
            out["report_quality"] = {d: row for d, row in self.quality.to_dict("index").items()}
        if self.finetuned is not None:
            out["finetuned"] = self.finetuned.to_dict("records")
        return clean(out)

    def markdown(self) -> str:
        parts = [f"# Beyond REFERS: {self.run_dir.name} ({self.profile})\n",
                 f"Checkpoint `{self.checkpoint}`.\n"]
        ov = self.overview()
        if len(ov):
            parts += ["## Target domains: mean test AUC\n", to_markdown(ov)]
        if self.zero_shot:
            zs = self.zero_shot_frame().set_index(["domain", "class"])[["positives", "images", "auc"]]
            zs.index = [f"{d} · {c}" for d, c in zs.index]
            zs.index.name = "domain · class"
            parts += ["## Zero-shot classification, per class (test split)\n", to_markdown(zs)]
        if self.retrieval is not None:
            parts += [f"## Retrieval on the source {self.retrieval.split} split ({self.retrieval.n} studies, "
                      f"{self.retrieval.distinct_reports} distinct reports)\n", to_markdown(self.retrieval.to_frame())]
        if self.quality is not None:
            parts += ["## Report generation (source test split)\n", to_markdown(self.quality)]
            for d, f1 in self.clinical.items():
                parts += [f"### Clinical finding F1, {d}\n", to_markdown(f1)]
        if self.notes:
            parts += ["## Notes\n", "\n".join(f"* {n}" for n in self.notes) + "\n"]
        return "\n".join(parts)

    def write(self, out: str | Path) -> dict[str, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}

        def put(name: str, df: pd.DataFrame | None, index: bool = False):
            if df is not None and len(df):
                df.to_csv(out / name, index=index)
                paths[name.rsplit(".", 1)[0]] = out / name
        put("zero_shot.csv", self.zero_shot_frame())
        put("retrieval.csv", None if self.retrieval is None else self.retrieval.to_frame(), index=True)
        put("generated_reports.csv", self.reports)
        put("report_quality.csv", self.quality, index=True)
        if self.clinical:
            put("clinical_f1.csv", pd.concat({d: f for d, f in self.clinical.items()}, names=["decoding", "label"]),
                index=True)
        put("linear_probe.csv", self.probe_frame())
        put("linear_probe_random_init.csv", self.random_probe_frame())
        put("overview.csv", self.overview(), index=True)
        (out / "summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        (out / "beyond.md").write_text(self.markdown())
        paths["summary"], paths["markdown"] = out / "summary.json", out / "beyond.md"
        self.paths = paths
        return paths


def _frame(probes: Sequence[LinearProbeResult]) -> pd.DataFrame:
    return pd.concat([p.to_frame() for p in probes], ignore_index=True) if probes else pd.DataFrame()


def _summary(probes: Sequence[LinearProbeResult]) -> pd.DataFrame:
    return pd.concat([p.summary() for p in probes], ignore_index=True) if probes else \
        pd.DataFrame(columns=["domain", "ratio", "mean_auc", "std", "seeds"])


def initial_model(cfg):
    """The run's whole REFERS at its initial weights, in eval mode: ``seed_everything(cfg.train.seed)`` then
    ``REFERS.from_config(cfg)``, as pre-training starts (``training/pretrain.py``). The global random state is
    left as it was."""
    from ..models import REFERS
    from ..training.runtime import rng_state, seed_everything, set_rng_state
    state = rng_state()
    try:
        seed_everything(cfg.train.seed)
        return REFERS.from_config(cfg).eval()
    finally:
        set_rng_state(state)


def initial_encoder(cfg):
    """The run's image encoder at its initial weights (:func:`initial_model`'s), in eval mode."""
    return initial_model(cfg).encoder.eval()


def _report_tokenizer(cfg, source: Path):
    """The report tokenizer pre-training used (next to its data root) if it can be found, else the one next to
    the evaluation's source folder; checked against the model's vocabulary."""
    from ..data.loading.source_studies import resolve_report_tokenizer
    tok = None
    if cfg.data.source == "source" and Path(cfg.data.root).is_dir():
        try:
            tok = resolve_report_tokenizer(Path(cfg.data.root), None)
        except FileNotFoundError:
            tok = None
    tok = tok or resolve_report_tokenizer(source, None)
    if tok.vocab_size > cfg.model.vocab_size:
        raise ValueError(f"the report tokenizer of {source} has {tok.vocab_size} tokens, more than the model's "
                         f"vocabulary ({cfg.model.vocab_size}): this run was not pre-trained on these reports")
    return tok


def evaluate_run(run_dir: str | Path, data_root: str | Path, out: str | Path | None = None, profile: str | None = None,
                 domains: Sequence[str] | None = None, finetuned=None, checkpoint: str | None = None, seed: int = 0,
                 device: str = "auto", log: Callable[[str], None] = print, **overrides) -> Evaluation:
    """Run every evaluation of this module on a pre-training run folder and write the results (module doc).

    ``profile``: the sizes of :data:`EVAL_PROFILES` (default: the run's own profile); ``overrides``: any of its
    keys (``beams``, ``max_studies``, ``probe_ratios``, ``probe_seeds``, ``batch_size``, ``random_init_probes``:
    ``False`` skips the probes of the architecture at random initialisation). ``domains``: the target
    domains (default: those of :data:`TARGETS` built under ``data_root``). ``finetuned``: an experiment grid's
    ``results.csv`` (path or frame), ``False`` for none; default ``RUN/../../results.csv`` if it exists.
    """
    from .joint_space import JointSpace
    from .report_metrics import generate_reports, report_quality

    model, cfg, ckpt = load_run(run_dir, checkpoint, device)
    run_dir, data_root = Path(run_dir), Path(data_root)
    profile = profile or cfg.profile
    if profile not in EVAL_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(EVAL_PROFILES)}")
    unknown = set(overrides) - set(EVAL_PROFILES[profile])
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(EVAL_PROFILES[profile])}")
    s = {**EVAL_PROFILES[profile], **overrides}
    source = data_root / "source"
    if domains is None:
        domains = [d for d in TARGETS if (data_root / d / "domain.json").is_file()]
    for d in domains:
        if not (data_root / d / "domain.json").is_file():
            raise FileNotFoundError(f"{data_root / d}: no built target domain (run `refers-lite data build`)")
    ev = Evaluation(run_dir, ckpt, profile)
    if cfg.data.source != "source":
        ev.notes.append(f"this run was pre-trained on {cfg.data.source!r} studies, not on the source domain it is "
                        f"evaluated on ({source}): its reports and report vocabulary are not these")
    torch.manual_seed(seed)

    space = JointSpace(model, cfg, batch_size=s["batch_size"])
    ev.temperature = space.temperature
    if space.has_text:
        t0 = time.time()
        for d in domains:
            ev.zero_shot.append(zero_shot_domain(space, data_root / d))
            ev.zero_shot[-1].domain = d  # the folder's name, as the experiment grid names domains
            log(f"zero-shot {d}: mean test AUC {ev.zero_shot[-1].mean_auc:.3f}")
        ev.seconds["zero_shot"] = round(time.time() - t0, 2)
    else:
        ev.notes.append("no zero-shot classification or retrieval: the model has no text encoder (Task 2 off)")

    tok = None
    if space.has_text or model.decoder is not None:
        if not (source / "studies.csv").is_file():
            raise FileNotFoundError(f"{source}: no source domain (studies.csv); run `refers-lite data build`")
        tok = _report_tokenizer(cfg, source)
    if space.has_text:
        t0 = time.time()
        ev.retrieval = retrieval(space, source, "test", KS, seed=seed, report_tokenizer=tok)
        r = ev.retrieval
        log(f"retrieval on {r.n} test studies: image->report R@1 {r.image_to_report[1]:.3f}, report->image R@1 "
            f"{r.report_to_image[1]:.3f} (random {r.random[1]:.3f})")
        ev.seconds["retrieval"] = round(time.time() - t0, 2)

    if model.decoder is not None:
        t0 = time.time()
        ev.reports = generate_reports(model, cfg, source, beams=s["beams"], max_studies=s["max_studies"], seed=seed,
                                      batch_size=s["batch_size"], report_tokenizer=tok)
        ev.quality, ev.clinical = report_quality(ev.reports)
        best = ev.quality.drop(index="real reports")
        log("report generation: " + ", ".join(f"{d} BLEU-4 {row['BLEU-4']:.3f} ROUGE-L {row['ROUGE-L']:.3f}"
                                                for d, row in best.iterrows()))
        ev.seconds["report_generation"] = round(time.time() - t0, 2)
    else:
        ev.notes.append("no report generation: the model has no report transformer (Task 1 off)")

    def probes(encoder, name: str) -> list[LinearProbeResult]:
        out = []
        for d in domains:
            out.append(linear_probe(encoder, data_root / d, ratios=s["probe_ratios"], seeds=s["probe_seeds"],
                                    augment=cfg.data.augmenter(cfg.model.image_size), batch_size=s["batch_size"]))
            out[-1].domain = d
            summ = out[-1].summary()
            log(f"{name} {d}: " + ", ".join(f"{r:g} -> {a:.3f}" for r, a in zip(summ["ratio"], summ["mean_auc"])))
        return out

    t0 = time.time()
    ev.probes = probes(model.encoder, "linear probe")
    ev.seconds["linear_probe"] = round(time.time() - t0, 2)
    if s["random_init_probes"]:  # the baseline: the same probes of the same architecture at its initial weights
        t0 = time.time()
        ev.random_probes = probes(initial_encoder(cfg).to(next(model.encoder.parameters()).device),
                                  "random-init probe")
        ev.seconds["random_init_probe"] = round(time.time() - t0, 2)

    if finetuned is None:
        default = run_dir.parent.parent / "results.csv"
        finetuned = default if default.is_file() else False
    if finetuned is not False:
        method = run_dir.name.split("-")[0] or "refers"
        ev.finetuned = finetuned_auc(finetuned, method=method)
        ev.notes.append(f"fine-tuned results: method {method!r} of "
                        f"{finetuned if isinstance(finetuned, (str, Path)) else 'the given results'}")
    ev.notes.append(f"device {next(model.parameters()).device}; python {platform.python_version()}; "
                    f"torch {torch.__version__}")
    ev.write(out if out is not None else run_dir / "beyond")
    return ev
