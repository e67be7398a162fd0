"""The experiment grid behind the paper's Tables 1-3 and Figure 2.

Methods x target columns x seeds, where a column is a (domain, label ratio) pair laid out as the
paper's Table 1: NIH and VinBigData at 1 %, 10 % and 100 % of the training labels, Shenzhen and
the two COVID-19 tasks with all of them. Each method is

* a pre-training: REFERS on the source domain with a config variant (the ablations of Table 3 are
  variants: a ResNet instead of the radiograph transformer, no recurrent concatenation, no report generation (Task 1), no study-report consistency
  (Task 2)), exported to an image encoder; or none (training from scratch);
* then one fine-tuning run per cell (``training/finetune.py``), with the paper's fine-tuning recipe.

Every pre-training and every cell lives in a folder named by a hash of everything that decides
its result (configs, data folder, ratio, seed): a re-run (for instance, re-building the book)
reuses what is finished, a changed setting gets a new folder, and an interrupted grid resumes
(a pre-training from its ``last.pt``, a grid from its finished cells).

Outputs in ``out``: ``results.csv`` (one row per cell and class), ``table1.{csv,md}``,
``table3.{csv,md}`` and ``figure2.png`` (AUC against the label ratio).

Methods (``METHODS``): REFERS; LSP (Transformer) and LSP (ConvNet), label-supervised on the same
source radiographs (``baselines/lsp.py``); a MoCo v2-style image-only contrastive pre-training, our
implementation of the self-supervised family C2L belongs to (``baselines/moco.py``); training from
scratch; ImageNet initialisation (``baselines/imagenet.py``: timm's ViT-B/16 weights, paper profile, with
internet; elsewhere Table 1 prints its row as not available here, with the reason, never faked); and the
ablations. The tables list the methods that ran.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .config import deep_update, get_config
from .training.finetune import FinetuneConfig, finetune, get_finetune_config
from .evaluation.metrics import compare_to_best_baseline, summarize_seeds
from .models.conv_encoder import CONVNET_OF_PROFILE
from .training.run_lock import run_lock

DOMAIN_LABELS = {"nih": "NIH", "vindr": "VBD", "shenzhen": "SZ", "covid_t1": "C-T1", "covid_t2": "C-T2"}
PAPER_COLUMNS = (("nih", 0.01), ("nih", 0.1), ("nih", 1.0), ("vindr", 0.01), ("vindr", 0.1), ("vindr", 1.0),
                 ("shenzhen", 1.0), ("covid_t1", 1.0), ("covid_t2", 1.0))


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # as the tables print it
    kind: str  # "refers" (a REFERS pre-training variant), "scratch", "lsp", "moco" or "imagenet"
    pretrain: dict = field(default_factory=dict)  # REFERS config overrides (kind "refers")
    arch: str = "vit"  # "vit" (the radiograph transformer) or "convnet" (a timm ResNet; LSP)
    finetune: dict = field(default_factory=dict)  # fine-tuning overrides (Adam 1e-4 for ResNets, as the paper)
    ablation: tuple[str, ...] = ()  # Table 3: the components it keeps, of ViT, RecConcat, Fusion, Task1, Task2


ADAM = {"optimizer": "adam", "lr": 1e-4}
BASELINE_PRETRAININGS = ("lsp", "moco")  # the method kinds whose pre-training learns from images alone
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("refers", "Our REFERS", "refers", ablation=("ViT", "RecConcat", "Fusion", "Task1", "Task2")),
    Method("lsp_transformer", "LSP (Transformer)", "lsp", ablation=("ViT", "RecConcat")),
    Method("lsp_convnet", "LSP (ConvNet)", "lsp", arch="convnet", finetune=ADAM),
    Method("moco", "MoCo v2-style (ours)", "moco"),
    Method("imagenet", "ImageNet (ViT-B/16, timm)", "imagenet"),
    Method("scratch", "From scratch", "scratch"),
    Method("refers_convnet", "REFERS with a ResNet instead of the radiograph transformer", "refers",
           {"model": {"encoder": "convnet"}}, finetune=ADAM, ablation=("Fusion", "Task1", "Task2")),
    Method("no_rec_concat", "REFERS without recurrent concatenation", "refers", {"model": {"agg_mode": "none"}},
           ablation=("ViT", "Fusion", "Task1", "Task2")),
    Method("no_fusion", "REFERS without view fusion (one view per report)", "refers", {"model": {"num_views": 1}},
           ablation=("ViT", "RecConcat", "Task1", "Task2")),
    Method("no_task1", "REFERS without report generation (Task 1)", "refers", {"loss": {"use_generation": False}},
           ablation=("ViT", "RecConcat", "Fusion", "Task2")),
    Method("no_task2", "REFERS without study-report consistency (Task 2)", "refers",
           {"loss": {"use_consistency": False}}, ablation=("ViT", "RecConcat", "Fusion", "Task1")),
)}
TABLE1_METHODS = ("refers", "moco", "imagenet", "lsp_transformer", "lsp_convnet", "scratch")
TABLE2_METHODS = ("refers", "lsp_transformer")
TABLE3_METHODS = ("lsp_transformer", "refers_convnet", "no_rec_concat", "no_fusion", "no_task1", "no_task2", "refers")
TABLE3_COLUMN = ("covid_t2", 1.0)  # the paper's ablation reports viral vs bacterial pneumonia

ABLATIONS = ("refers_convnet", "no_rec_concat", "no_fusion", "no_task1", "no_task2")
# Table 1 methods on every column; the ablation-only variants on the Table 3 column alone (``ablation_columns``)
EXPERIMENT_PROFILES: dict[str, dict] = {
    "paper": dict(methods=tuple(METHODS), columns=PAPER_COLUMNS, seeds=(0, 1, 2), ablation_columns=PAPER_COLUMNS),
    "demo": dict(methods=tuple(METHODS), columns=PAPER_COLUMNS, seeds=(0, 1, 2), ablation_columns=(TABLE3_COLUMN,)),
    "gpu": dict(methods=tuple(METHODS), columns=PAPER_COLUMNS, seeds=(0, 1, 2), ablation_columns=(TABLE3_COLUMN,)),
    "smoke": dict(methods=tuple(METHODS), columns=(("nih", 0.1), ("nih", 1.0), ("shenzhen", 1.0), ("covid_t2", 1.0)),
                  seeds=(0, 1)),
}

# What the book's chapters run at each profile: subsets of the profile's grid (05: Tables 1-2 and Figure 2;
# 07: Table 3). They share its cached pre-trainings and cells, so after `refers-lite experiments --profile P`
# they cost nothing. At demo they are cut to fit `make book` on a 2-core CPU: chapter 05 drops MoCo and keeps
# VinBigData at 1 % only (the paper's claim at 1 % is on both tasks; a 1 % cell costs seconds); chapter 07 keeps
# LSP and the ablations of the two tasks (not the recurrent concatenation, the ResNet or the single view, so that
# `make book` fits the hour) and pre-trains each of them, REFERS included so the comparison stays fair, for 100
# steps (2 epochs) instead of the shared pre-training's DEMO_STEPS. At gpu, chapter 05 adds MoCo and VinBigData
# and chapter 07 runs every ablation, each pre-trained for 800 steps (a third of the shared run's GPU_STEPS).
CHAPTER_GRIDS: dict[str, dict[str, dict]] = {
    "finetuning": {
        "smoke": dict(methods=("refers", "lsp_transformer", "scratch"), columns=(("nih", 0.1), ("nih", 1.0),
                                                                               ("covid_t2", 1.0)), seeds=(0, 1)),
        "demo": dict(methods=("refers", "lsp_transformer", "scratch"),
                     columns=(("nih", 0.01), ("nih", 0.1), ("nih", 1.0), ("vindr", 0.01), ("covid_t2", 1.0)),
                     seeds=(0, 1, 2)),
        "gpu": dict(methods=("refers", "moco", "lsp_transformer", "scratch"),
                    columns=(("nih", 0.01), ("nih", 0.1), ("nih", 1.0), ("vindr", 0.01), ("vindr", 0.1),
                             ("vindr", 1.0), ("covid_t2", 1.0)), seeds=(0, 1, 2)),
        "paper": dict(methods=TABLE1_METHODS, columns=PAPER_COLUMNS, seeds=(0, 1, 2)),
    },
    # 08: the shared REFERS fine-tuned at 100 % of every target domain, beside its linear probes (the cells that
    # chapter 05 also runs are shared with it, not trained twice)
    "beyond": {
        "smoke": dict(methods=("refers",), columns=(("nih", 1.0), ("shenzhen", 1.0), ("covid_t2", 1.0)), seeds=(0,)),
        **{p: dict(methods=("refers",), columns=tuple((d, 1.0) for d in DOMAIN_LABELS), seeds=(0, 1, 2))
           for p in ("demo", "gpu", "paper")},
    },
    "ablations": {
        "smoke": dict(methods=TABLE3_METHODS, columns=(TABLE3_COLUMN,), seeds=(0, 1)),
        "demo": dict(methods=("lsp_transformer", "no_task1", "no_task2", "refers"),
                     columns=(TABLE3_COLUMN,), seeds=(0, 1, 2),
                     pretrain_overrides={"train": {"max_steps": 100, "warmup_steps": 10}}),
        "gpu": dict(methods=TABLE3_METHODS, columns=(TABLE3_COLUMN,), seeds=(0, 1, 2),
                    pretrain_overrides={"train": {"max_steps": 800, "warmup_steps": 80}}),
        "paper": dict(methods=TABLE3_METHODS, columns=(TABLE3_COLUMN,), seeds=(0, 1, 2)),
    },
}


def chapter_grid(chapter: str, profile: str) -> dict:
    """Keyword arguments of :func:`run_experiments` for a chapter's grid at a profile."""
    if chapter not in CHAPTER_GRIDS:
        raise ValueError(f"unknown chapter grid {chapter!r}; choose one of {', '.join(CHAPTER_GRIDS)}")
    if profile not in CHAPTER_GRIDS[chapter]:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(CHAPTER_GRIDS[chapter])}")
    return copy.deepcopy(CHAPTER_GRIDS[chapter][profile])  # a copy: callers may change it


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class Grid:
    profile: str
    data_root: Path
    out: Path
    methods: tuple[str, ...]
    columns: tuple[tuple[str, float], ...]
    seeds: tuple[int, ...]
    pretrain_overrides: dict = field(default_factory=dict)  # applied to every pre-training (e.g. fewer steps)
    finetune_overrides: dict = field(default_factory=dict)
    ablation_columns: tuple[tuple[str, float], ...] | None = None  # None: the ablations run on every column

    def pretrain_config(self, method: Method):
        """The profile's REFERS config on the source domain (its augmentation: the paper's, flips included, at
        ``paper``; none at ``demo``), a decoder vocabulary at least as large as the report tokenizer's, then the
        method's variant."""
        from .data.loading.source_studies import resolve_report_tokenizer
        root = (self.data_root / "source").resolve()  # one cache key however the path is spelled
        vocab = resolve_report_tokenizer(root, None).vocab_size
        over = {"data": {"source": "source", "root": str(root)},
                "model": {"vocab_size": max(vocab, get_config(self.profile).model.vocab_size)}}
        deep_update(over, json.loads(json.dumps(self.pretrain_overrides)))
        patch = json.loads(json.dumps(method.pretrain))
        if patch.get("model", {}).get("encoder") == "convnet":  # the profile's ResNet (resnet18 / resnet50)
            patch["model"]["encoder"] = CONVNET_OF_PROFILE[self.profile]
        return get_config(self.profile, deep_update(over, patch))

    def scratch_model(self) -> dict:
        """Training from scratch uses REFERS's image-encoder architecture: the radiograph transformer settings of
        REFERS's pre-training config that differ from the profile's (empty when they are the profile's)."""
        from .models.radiograph_transformer import RadiographTransformer
        mine = self.pretrain_config(METHODS["refers"]).model
        base = get_config(self.profile).model
        return {k: getattr(mine, k) for k in RadiographTransformer.CONFIG_KEYS if getattr(mine, k) != getattr(base, k)}

    def finetune_config(self, method: Method) -> FinetuneConfig:
        return get_finetune_config(self.profile, {**self.finetune_overrides, **method.finetune})


def radiographs_per_step(grid: Grid) -> tuple[int, int]:
    """(steps, radiographs per step) of REFERS's pre-training: its studies per batch x the mean number of
    distinct films its training studies put in the ``num_views`` slots (a study with fewer films repeats one,
    ``data/views.py``), so a baseline that learns from single films sees as many films as REFERS does."""
    ref = grid.pretrain_config(METHODS["refers"])
    table = pd.read_csv(Path(ref.data.root) / "studies.csv", usecols=["split", "image_ids"])
    n_films = table.loc[table.split == "train", "image_ids"].str.count(";").add(1).clip(upper=ref.model.num_views)
    per_study = float(n_films.mean()) if len(n_films) else float(ref.model.num_views)
    return ref.train.max_steps, max(1, round(ref.train.batch_size * per_study))


def lsp_pretrain_config(grid: Grid, method: Method):
    """The label-supervised pre-training of an LSP baseline: exactly as many steps as REFERS's pre-training
    (``min_steps`` = ``max_steps`` = its ``train.max_steps``: a profile's own fine-tuning cap, 250 at demo, must
    not cut it short or reject it), with REFERS's radiographs per step (:func:`radiographs_per_step`). Where
    REFERS pre-trains with AdamW (the course profiles), so does LSP, at REFERS's image-side learning rate and
    weight decay: the fine-tuning SGD leaves a from-scratch transformer far behind in a CPU budget, as it did
    REFERS (config.py). The paper's profile keeps the fine-tuning recipe; a method's own optimizer (LSP
    (ConvNet): Adam 1e-4) wins."""
    steps, batch = radiographs_per_step(grid)
    return get_finetune_config(grid.profile, {"min_steps": steps, "max_steps": steps, "epochs": 4,
                                              "batch_size": batch, "head_init": "random",
                                              **refers_adamw(grid), **method.finetune})


def refers_adamw(grid: Grid) -> dict:
    """REFERS's image-side optimizer where it pre-trains with AdamW (the course profiles), for the baselines that
    pre-train on images to get the same: ``{"optimizer": "adamw", "lr": lr_vision, "weight_decay": ...}``; ``{}``
    elsewhere (the baseline keeps its own)."""
    ref = grid.pretrain_config(METHODS["refers"]).train
    return {"optimizer": "adamw", "lr": ref.lr_vision, "weight_decay": ref.weight_decay} \
        if ref.optimizer == "adamw" else {}


def moco_pretrain_kwargs(grid: Grid) -> dict:
    """The MoCo baseline's pre-training (:func:`~refers_lite.baselines.moco.pretrain_moco`'s keywords): as many steps as
    REFERS's pre-training with its radiographs per step (:func:`radiographs_per_step`), and, where REFERS pre-trains
    with AdamW (the course profiles), AdamW at REFERS's image-side learning rate, as LSP gets
    (:func:`lsp_pretrain_config`): MoCo's SGD at lr 3e-3 barely separates images in a CPU budget (the module's
    docstring). The paper's profile keeps MoCo's SGD."""
    steps, batch = radiographs_per_step(grid)
    same = refers_adamw(grid)
    same.pop("weight_decay", None)  # MoCo reads it from the profile's config, the same as REFERS's
    return dict(steps=steps, batch_size=batch, **same)


def pretrain_encoder(grid: Grid, method: Method, progress: bool = True, log: Callable[[str], None] = print) -> str:
    """The encoder a method fine-tunes: ``"scratch"``, or the exported encoder of its (cached) pre-training.

    The baselines see the radiographs REFERS sees: as many steps as its pre-training, with its studies x
    views radiographs per step."""
    if method.kind == "scratch":
        return "scratch"
    if method.kind == "imagenet":  # raises ImageNetUnavailable offline or at a size without ImageNet weights
        from .baselines.imagenet import IMAGENET_VIT_OF_PROFILE, imagenet_encoder
        name = IMAGENET_VIT_OF_PROFILE.get(grid.profile, "none")
        run = grid.out / "pretrain" / f"{method.name}-{_digest([grid.profile, name])}"
        encoder = imagenet_encoder(grid.profile, run / "encoder.pt")
        log(f"{method.name}: ImageNet weights ({name}) in the radiograph transformer: {encoder}")
        return str(encoder)
    if method.kind in ("lsp", "moco"):
        source = grid.data_root / "source"
        renders = grid.pretrain_config(METHODS["refers"]).data.renders  # the films REFERS is given
        films = {"renders": renders} if renders > 1 else {}  # (one render: the run names of before renders)
        if method.kind == "lsp":
            from .baselines.lsp import pretrain_lsp
            cfg = lsp_pretrain_config(grid, method)
            key = [cfg.to_dict(), str(source.resolve())] + ([films] if films else [])
            run = grid.out / "pretrain" / f"{method.name}-{_digest(key)}"
            with run_lock(run, log):
                if not (run / "encoder.pt").is_file():
                    log(f"pre-training {method.name} (label-supervised, {cfg.max_steps} steps) in {run}")
                return str(pretrain_lsp(method.arch, grid.profile, source, run, cfg=cfg, progress=progress,
                                        renders=renders))
        from .baselines.moco import pretrain_moco
        kw = moco_pretrain_kwargs(grid)
        steps = kw["steps"]
        run = grid.out / "pretrain" / f"{method.name}-{_digest([grid.profile, kw | films, str(source.resolve())])}"
        with run_lock(run, log):
            if not (run / "encoder.pt").is_file():
                log(f"pre-training {method.name} (image-only contrastive, {steps} steps) in {run}")
            return str(pretrain_moco(grid.profile, source, run, progress=progress, renders=renders, **kw))
    from .training.checkpoint import export_image_encoder
    from .training.pretrain import pretrain
    cfg = grid.pretrain_config(method)
    run = grid.out / "pretrain" / f"{method.name}-{_digest(cfg.identity())}"
    encoder = run / "encoder.pt"
    with run_lock(run, log):  # chapters run in parallel: one of them trains it, the others wait and reuse it
        if encoder.is_file():
            log(f"pre-training {method.name}: reused {run}")
            return str(encoder)
        log(f"pre-training {method.name} ({cfg.train.max_steps} steps) in {run}")
        res = pretrain(cfg, run, progress=progress)
        if res.interrupted:
            raise KeyboardInterrupt
        export_image_encoder(res.best_checkpoint or res.last_checkpoint, encoder)
    return str(encoder)


def run_grid(grid: Grid, progress: bool = True, log: Callable[[str], None] = print,
             report_dir: Path | None = None) -> pd.DataFrame:
    """Run (or reuse) every cell; returns one row per cell and class, also written to ``results.csv`` in
    ``report_dir`` (default: the grid's folder)."""
    from .baselines.imagenet import ImageNetUnavailable
    grid.out.mkdir(parents=True, exist_ok=True)
    unavailable = {}
    for name in grid.methods:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    by_method: dict[str, list[dict]] = {}
    # the baselines that pre-train on images (LSP, MoCo) run last: `make book` pre-trains them in a job of its own
    # (:func:`pretrain_chapter_baselines`) while a chapter fine-tunes the methods that need no waiting
    for name in sorted(grid.methods, key=lambda m: METHODS[m].kind in BASELINE_PRETRAININGS):
        method = METHODS[name]
        method_rows = by_method.setdefault(name, [])
        try:
            encoder = pretrain_encoder(grid, method, progress=progress, log=log)
        except ImageNetUnavailable as e:
            log(f"{name}: not available here ({e})")
            unavailable[name] = str(e)
            continue
        encoder_sha = _file_digest(encoder)  # once per method: the cells below all fine-tune this file
        ft_cfg = grid.finetune_config(method)
        scratch_model = grid.scratch_model() if method.kind == "scratch" else None
        columns = grid.columns
        if name in ABLATIONS and grid.ablation_columns is not None:
            columns = tuple(c for c in grid.columns if c in grid.ablation_columns)
        for domain, ratio in columns:
            droot = grid.data_root / domain
            if not (droot / "domain.json").is_file():
                raise FileNotFoundError(f"{droot}: no built domain (run `refers-lite data build --profile "
                                        f"{grid.profile}`)")
            for seed in grid.seeds:
                key = {"encoder": encoder, "encoder_sha": encoder_sha, "finetune": ft_cfg.to_dict(),
                       "domain": str(droot.resolve()), "ratio": ratio, "seed": seed}
                if scratch_model:
                    key["scratch_model"] = scratch_model
                cell = grid.out / "cells" / f"{name}-{domain}-{ratio:g}-s{seed}-{_digest(key)}"
                with run_lock(cell, log):
                    res = finetune(encoder, droot, ratio, seed, cell, cfg=ft_cfg, progress=progress,
                                   scratch_model=scratch_model, overwrite=True)  # the grid's own cell
                log(f"{name:>14} {domain:>9} {ratio:>5g} seed {seed}: test mean AUC {res.test_mean_auc:.3f}"
                    f"{' (reused)' if res.reused else ''}")
                for cls, auc in res.test_auc.items():
                    method_rows.append({"method": name, "domain": domain, "ratio": ratio, "seed": seed,
                                        "class": cls, "auc": auc, "mean_auc": res.test_mean_auc,
                                        "val_mean_auc": res.val_mean_auc, "cell": str(cell)})
    rows = [r for name in grid.methods for r in by_method.get(name, [])]  # the grid's order of methods
    df = pd.DataFrame(rows, columns=["method", "domain", "ratio", "seed", "class", "auc", "mean_auc",
                                     "val_mean_auc", "cell"])
    df.attrs["unavailable"] = unavailable  # method -> why it could not run here (the tables say so)
    report_dir = Path(report_dir or grid.out)
    report_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(report_dir / "results.csv", index=False)
    (report_dir / "unavailable.json").write_text(json.dumps(unavailable, indent=1) + "\n")
    return df


def _file_digest(path: str) -> str:
    if path == "scratch":
        return "scratch"
    from .training.finetune import encoder_sha256
    return encoder_sha256(path)[:16]  # the same digest finetune() checks, read once


# -- tables and the figure ---------------------------------------------------------------------


def _column_name(domain: str, ratio: float) -> str:
    return f"{DOMAIN_LABELS.get(domain, domain)} {'All' if ratio == 1.0 and domain not in ('nih', 'vindr') else f'{ratio:.0%}'}"


def _cell_values(df: pd.DataFrame, method: str, domain: str, ratio: float) -> list[float]:
    from .evaluation.verdicts import seed_aucs
    return seed_aucs(df, method, domain, ratio).tolist()


BEST_OTHER_ROW, P_VALUE_ROW = "best other method", "p-value (t-test vs the best other method)"


def table(df: pd.DataFrame, methods, columns, p_against: str | None = "refers") -> pd.DataFrame:
    """Mean ± std AUC x 100 over seeds per method and column; under them, per column, the best other method
    (highest mean) and the t-test p-value between ``p_against`` and it, as the paper computes its p-values."""
    methods = [m for m in methods if m in set(df.method)]
    out = {}
    for domain, ratio in columns:
        col = {}
        for m in methods:
            vals = _cell_values(df, m, domain, ratio)
            col[METHODS[m].label] = summarize_seeds(vals).format() if vals else "–"
        results = {m: v for m in methods if (v := _cell_values(df, m, domain, ratio))}
        others = [m for m in results if m != p_against]
        if p_against in results and others:
            cmp = compare_to_best_baseline(results, p_against, others)
            col[BEST_OTHER_ROW] = METHODS[cmp["best_baseline"]].label
            col[P_VALUE_ROW] = f"{cmp['p_value']:.2e}" if math.isfinite(cmp["p_value"]) else "n/a"
        out[_column_name(domain, ratio)] = col
    return pd.DataFrame(out)


def ablation_table(df: pd.DataFrame, methods=TABLE3_METHODS, column=TABLE3_COLUMN) -> pd.DataFrame:
    parts = ("ViT", "RecConcat", "Fusion", "Task1", "Task2")
    rows = []
    for m in [m for m in methods if m in set(df.method)]:
        vals = _cell_values(df, m, *column)
        rows.append({"method": METHODS[m].label, **{p: "✓" if p in METHODS[m].ablation else "" for p in parts},
                     _column_name(*column): summarize_seeds(vals).format() if vals else "–"})
    return pd.DataFrame(rows, columns=["method", *parts, _column_name(*column)]).set_index("method")


def to_markdown(t: pd.DataFrame) -> str:
    head = [t.index.name or ""] + [str(c) for c in t.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(i)] + [str(v) for v in row]) + " |" for i, row in zip(t.index, t.values)]
    return "\n".join(lines) + "\n"


def figure2(df: pd.DataFrame, path: Path, methods=TABLE1_METHODS):
    """AUC against the fraction of labels (NIH and VinBigData), mean ± std over seeds per method."""
    from matplotlib.figure import Figure  # not pyplot: the caller's backend (a notebook's inline one) is left alone
    domains = [d for d in ("nih", "vindr") if d in set(df.domain)] or sorted(set(df.domain))[:1]
    fig = Figure(figsize=(5 * len(domains), 3.8))
    axes = fig.subplots(1, len(domains), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for m in [m for m in methods if m in set(df.method)]:
            ratios = sorted(set(df[(df.domain == domain) & (df.method == m)].ratio))
            stats = [summarize_seeds(_cell_values(df, m, domain, r)) for r in ratios]
            ax.errorbar([100 * r for r in ratios], [100 * s.mean for s in stats], yerr=[100 * s.std for s in stats],
                        marker="o", capsize=3, label=METHODS[m].label)
        ax.set_xscale("log")
        ticks = sorted(set(100 * df[df.domain == domain].ratio))
        ax.set_xticks(ticks, [f"{t:g} %" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled training images (%)")
        ax.set_ylabel("mean test AUC (× 100)")
        ax.set_title(DOMAIN_LABELS.get(domain, domain))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def with_unavailable(t: pd.DataFrame, methods, unavailable: dict[str, str]) -> pd.DataFrame:
    """Table ``t`` with a "not available here" row for each of ``methods`` that could not run (``unavailable``:
    method -> reason), in the methods' order; its cells are marked, never filled."""
    missing = [m for m in methods if m in unavailable and METHODS[m].label not in t.index]
    if not missing:
        return t
    t = t.copy()
    for m in missing:
        t.loc[METHODS[m].label] = "not available here"
    order = [METHODS[m].label for m in methods if METHODS[m].label in t.index]
    return t.loc[order + [i for i in t.index if i not in order]]


def write_reports(df: pd.DataFrame, out: Path, unavailable: dict[str, str] | None = None) -> dict[str, Path]:
    """results -> table1/2/3 (.csv, .md) and figure2.png in ``out``. ``unavailable`` (default: ``df.attrs``):
    methods that could not run here, printed as such in Table 1 with the reason under it."""
    unavailable = df.attrs.get("unavailable", {}) if unavailable is None else unavailable
    cols = tuple(dict.fromkeys((r.domain, r.ratio) for r in df[["domain", "ratio"]].itertuples()))
    ordered = tuple(c for c in PAPER_COLUMNS if c in cols) + tuple(c for c in cols if c not in PAPER_COLUMNS)
    paths = {}
    t1 = with_unavailable(table(df, TABLE1_METHODS, ordered), TABLE1_METHODS, unavailable)
    t2 = table(df, TABLE2_METHODS, ordered)
    for t in (t1, t2):
        t.index.name = "Method"
    t3_col = TABLE3_COLUMN if TABLE3_COLUMN in cols else ordered[-1]
    t3 = ablation_table(df, column=t3_col)
    notes = "".join(f"\n{METHODS[m].label}: not available here: {why}\n" for m, why in unavailable.items()
                    if m in TABLE1_METHODS)
    for name, t in (("table1", t1), ("table2", t2), ("table3", t3)):
        t.to_csv(out / f"{name}.csv")
        (out / f"{name}.md").write_text(to_markdown(t) + (notes if name == "table1" else ""))
        paths[name] = out / f"{name}.md"
    paths["figure2"] = figure2(df, out / "figure2.png")
    return paths


def grid_results(profile: str = "smoke", data_root: str | Path = "data/synthetic", out: str | Path = "runs/experiments",
                 methods=None, columns=None, seeds=None, pretrain_overrides: dict | None = None,
                 finetune_overrides: dict | None = None, progress: bool = True,
                 log: Callable[[str], None] = print, report_dir: str | Path | None = None) -> pd.DataFrame:
    """Run (or reuse) the cells of a profile's grid (or the given subset), without the tables: one row per cell and
    class, also written to ``report_dir/results.csv`` (default ``out``). :func:`run_experiments` adds the tables."""
    if profile not in EXPERIMENT_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(EXPERIMENT_PROFILES)}")
    p = EXPERIMENT_PROFILES[profile]
    grid = Grid(profile, Path(data_root), Path(out), tuple(methods or p["methods"]), tuple(columns or p["columns"]),
                tuple(seeds if seeds is not None else p["seeds"]), pretrain_overrides or {}, finetune_overrides or {},
                p.get("ablation_columns"))
    return run_grid(grid, progress=progress, log=log, report_dir=report_dir)


def run_experiments(profile: str = "smoke", data_root: str | Path = "data/synthetic", out: str | Path = "runs/experiments",
                    methods=None, columns=None, seeds=None, pretrain_overrides: dict | None = None,
                    finetune_overrides: dict | None = None, progress: bool = True,
                    log: Callable[[str], None] = print, report_dir: str | Path | None = None) -> dict[str, Path]:
    """Run the grid of a profile (or the given subset) and write the tables and the figure.

    ``out`` holds the cached pre-trainings and cells; ``report_dir`` (default ``out``) gets results.csv, the
    tables and the figure, so that subsets of one grid (the book's chapters) share cells but not reports."""
    report_dir = Path(report_dir or out)
    df = grid_results(profile, data_root, out, methods, columns, seeds, pretrain_overrides, finetune_overrides,
                      progress, log, report_dir)
    if df.empty:
        why = "; ".join(f"{m}: {r}" for m, r in df.attrs["unavailable"].items())
        raise ValueError(f"no method of the grid could run here, so there are no tables ({why})")
    return write_reports(df, report_dir)


def pretrain_chapter_baselines(profile: str, data_root: str | Path, out: str | Path, chapter: str = "finetuning",
                               progress: bool = False, log: Callable[[str], None] = print) -> list[str]:
    """Pre-train (or reuse) the image-pre-trained baselines (LSP, MoCo) of a chapter's grid, the same runs its
    cells fine-tune: ``make book`` runs this as a job of its own beside the chapter, which fine-tunes REFERS and
    scratch first and then waits for these (on one core the LSP pre-training took 849 s at ``demo``)."""
    g = chapter_grid(chapter, profile)
    grid = Grid(profile, Path(data_root), Path(out), tuple(g["methods"]), (), (), g.get("pretrain_overrides", {}))
    return [pretrain_encoder(grid, METHODS[m], progress=progress, log=log)
            for m in grid.methods if METHODS[m].kind in BASELINE_PRETRAININGS]


def pretrained_refers(profile: str = "smoke", data_root: str | Path = "data/synthetic",
                      out: str | Path | None = None, method: str = "refers", progress: bool = True,
                      log: Callable[[str], None] = print) -> Path:
    """The run folder of a profile's (cached) REFERS pre-training on ``data_root/source``; trains it when
    missing. ``out``: the grid's folder, as for :func:`run_experiments` (default ``runs/experiments/PROFILE``). The folder holds ``best.pt`` / ``last.pt`` (whole model: :func:`refers_lite.training.checkpoint.load_refers`)
    and ``encoder.pt`` (the exported image encoder). The experiment grid, the CAM, fine-tuning and
    'beyond REFERS' chapters share it through this function, so it is trained once per profile."""
    if profile not in EXPERIMENT_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(EXPERIMENT_PROFILES)}")
    if method not in METHODS or METHODS[method].kind != "refers":
        raise ValueError(f"{method!r} is not a REFERS variant; choose one of "
                         f"{', '.join(m.name for m in METHODS.values() if m.kind == 'refers')}")
    out = Path(out) if out is not None else Path("runs/experiments") / profile
    grid = Grid(profile, Path(data_root), out, (method,), (), ())
    return Path(pretrain_encoder(grid, METHODS[method], progress=progress, log=log)).parent
