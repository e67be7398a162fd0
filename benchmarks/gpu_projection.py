"""How long `make book` takes at a profile on a GPU, projected from counted FLOPs.

For every model the book trains at ``--profile`` (the shared REFERS pre-training, the pre-trainings and
fine-tuning cells of chapters 05 and 07's grids, the linear probes of chapter 08), this counts the FLOPs of one
forward + backward with ``torch.utils.flop_counter`` on a small batch and scales it to the run: steps x batch for a
pre-training, the steps fine-tuning will take for a cell (5 or 10 epochs of the label subset, at least
``min_steps``; the subsets' sizes read from the built domains), plus the forward passes of validation, test and
LP-FT's probe. MoCo is counted as LSP x 4/3 (a key-encoder forward per image besides the query's forward and
backward). Chapters 00-04, 06 and 08's other cells (drawing, rendering checks, CAMs on a few films, report
generation for at most a few hundred studies) are left out: seconds on a GPU.

The total is turned into time with an achieved fraction of the GPU's dense bf16 (fp16 on a T4) peak: the MFU
measured for the paper-sized pre-training on one H200 (9.4 % eager, 14 % compiled; ``benchmarks/README.md``).
Smaller models reach a smaller fraction of the peak, so the script also prints the time at half of it, and never
less than a floor of 40 ms per optimiser step (eager kernel launches; assumed). And it
checks the method where it can be checked: at ``--profile demo`` with ``--cpu-rate`` (FLOP/s that this CPU
achieved in the demo pre-training, from its metrics), it projects the demo book on this CPU, to compare with the
measured `make book`.

    .venv/bin/python benchmarks/gpu_projection.py --profile gpu --data-root data/synthetic
    .venv/bin/python benchmarks/gpu_projection.py --profile demo --data-root data/synthetic --cpu-run RUN_DIR
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from refers_lite.config import get_config
from refers_lite.data.loading.domain_dataset import DomainImages
from refers_lite.experiments import CHAPTER_GRIDS, METHODS, Grid, radiographs_per_step
from refers_lite.training.finetune import get_finetune_config
from refers_lite.models import REFERS
from refers_lite.models.radiograph_transformer import RadiographTransformer

PEAKS = {"H100 / H200 (bf16, 989 TFLOP/s)": 989e12, "T4 (fp16, 65 TFLOP/s)": 65e12}
STEP_FLOOR_S = 0.04  # eager PyTorch: a few thousand kernel launches per training step of a small model
MFU_MEASURED = {"eager (9.4 %)": 0.094, "compiled (14 %)": 0.14, "half the eager MFU (4.7 %)": 0.047}


def _flops(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def pretrain_step_flops(cfg, studies: int = 2) -> float:
    """One REFERS step (forward + backward, both tasks as configured) at ``cfg.train.batch_size`` studies, counted on
    ``studies`` and scaled. A frozen text encoder's features are remembered: its forward is left out (steady state)."""
    torch.manual_seed(0)
    m = cfg.model
    model = REFERS.from_config(cfg).train()
    V, S, T, L = m.num_views, m.image_size, m.max_report_len, m.text_max_len
    x = torch.rand(studies, V, 1, S, S)
    kw = dict(images=x, view_mask=torch.ones(studies, V, dtype=torch.bool))
    if cfg.loss.use_generation:
        kw["report_ids"] = torch.randint(3, m.vocab_size, (studies, T))
    if cfg.loss.use_consistency:
        kw["text_ids"] = torch.randint(1000, 2000, (studies, L))
        kw["text_mask"] = torch.ones(studies, L, dtype=torch.long)
        model(**kw)  # fills the memory of a frozen text encoder
    return _flops(lambda: model(**kw).losses.total.backward()) * cfg.train.batch_size / studies


def image_flops(model_cfg, backward: bool) -> float:
    """The radiograph transformer on one film: forward, or forward + backward."""
    torch.manual_seed(0)
    enc = RadiographTransformer.from_config(model_cfg)
    x = torch.rand(2, 1, model_cfg.image_size, model_cfg.image_size)
    if backward:
        return _flops(lambda: enc(x)[0].sum().backward()) / 2
    with torch.no_grad():
        return _flops(lambda: enc(x)) / 2


def cell_flops(ft, domain_root: Path, ratio: float, seed: int, img_train: float, img_fwd: float
               ) -> tuple[float, int]:
    """A fine-tuning cell: (FLOPs, optimiser steps) of its training steps, validation each epoch, the test once and
    LP-FT's probe features."""
    n_train = len(DomainImages(domain_root, "train", ratio=ratio, seed=seed))
    n_val, n_test = len(DomainImages(domain_root, "validation")), len(DomainImages(domain_root, "test"))
    per_epoch = max(1, math.ceil(n_train / ft.batch_size))
    steps = max(ft.min_steps, ft.epochs * per_epoch)
    if ft.max_steps:
        steps = min(steps, ft.max_steps)
    evals = math.ceil(steps / per_epoch) * n_val + n_test + (n_train + n_val if ft.head_init == "probe" else 0)
    return steps * ft.batch_size * img_train + evals * img_fwd, steps


def book_work(profile: str, data_root: Path) -> list[tuple[str, float, int]]:
    """(what, FLOPs, optimiser steps) of every run the book's chapters train at ``profile``, each counted once."""
    items, seen = [], set()
    grid0 = Grid(profile, data_root, Path("/nonexistent"), ("refers",), (), ())
    shared = grid0.pretrain_config(METHODS["refers"])
    items.append(("shared REFERS pre-training", shared.train.max_steps * pretrain_step_flops(shared),
                  shared.train.max_steps))
    seen.add(json.dumps(shared.to_dict(), sort_keys=True))
    base = get_config(profile).model
    img_train, img_fwd = image_flops(base, True), image_flops(base, False)
    for chapter, grids in CHAPTER_GRIDS.items():
        kw = grids[profile]
        grid = Grid(profile, data_root, Path("/nonexistent"), tuple(kw["methods"]), tuple(kw["columns"]),
                    tuple(kw["seeds"]), kw.get("pretrain_overrides", {}), kw.get("finetune_overrides", {}))
        for name in grid.methods:
            method = METHODS[name]
            if method.kind == "refers":
                cfg = grid.pretrain_config(method)
                key = json.dumps(cfg.to_dict(), sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    items.append((f"{chapter}: {name} pre-training ({cfg.train.max_steps} steps)",
                                  cfg.train.max_steps * pretrain_step_flops(cfg), cfg.train.max_steps))
            elif method.kind in ("lsp", "moco"):
                steps, films = radiographs_per_step(grid)  # LSP's and MoCo's films per step (lsp_pretrain_config)
                key = f"{name}-{steps}-{films}"
                if key not in seen:
                    seen.add(key)
                    f = steps * films * img_train * (4 / 3 if method.kind == "moco" else 1)
                    items.append((f"{chapter}: {name} pre-training ({steps} steps x {films} films)", f, steps))
            else:
                key = name
            ft = grid.finetune_config(method)
            for domain, ratio in grid.columns:
                for seed in grid.seeds:
                    ckey = (key, json.dumps(ft.to_dict(), sort_keys=True), domain, ratio, seed)
                    if ckey in seen:
                        continue
                    seen.add(ckey)
                    items.append((f"{chapter}: cells", *cell_flops(ft, data_root / domain, ratio, seed, img_train,
                                                                   img_fwd)))
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="gpu")
    ap.add_argument("--data-root", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--cpu-run", type=Path, default=None,
                    help="a finished pre-training run of --profile on this CPU: its measured s/step gives the CPU's "
                         "achieved FLOP/s, and the book is projected on this CPU with it")
    args = ap.parse_args()
    items = book_work(args.profile, args.data_root)
    merged: dict[str, list] = {}
    for what, f, n in items:
        merged.setdefault(what, [0.0, 0])
        merged[what][0] += f
        merged[what][1] += n
    total, steps = sum(f for f, _ in merged.values()), sum(n for _, n in merged.values())
    print(f"profile {args.profile}: FLOPs of the book's training runs (forward + backward, counted)")
    for what, (f, n) in merged.items():
        print(f"  {what:<64} {f / 1e15:9.2f} PFLOP  ({100 * f / total:4.1f} %)  {n:7d} steps")
    print(f"  {'total':<64} {total / 1e15:9.2f} PFLOP           {steps:7d} steps")
    print(f"a floor for small models, whose steps are bound by kernel launches rather than FLOPs: "
          f"{STEP_FLOOR_S * 1e3:.0f} ms a step (assumed, not measured) x {steps} steps = {STEP_FLOOR_S * steps / 60:.0f} min")
    for gpu, peak in PEAKS.items():
        times = ", ".join(f"{k}: {max(total / (peak * mfu), STEP_FLOOR_S * steps) / 60:.0f} min"
                          for k, mfu in MFU_MEASURED.items())
        print(f"projected on one {gpu}: {times}")
    if args.cpu_run is not None:
        recs = [json.loads(x) for x in (args.cpu_run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        sps = sorted(r["sec_per_step"] for r in recs if "sec_per_step" in r)
        median = sps[len(sps) // 2]
        rate = merged["shared REFERS pre-training"][0] / get_config(args.profile).train.max_steps / median
        print(f"this CPU in {args.cpu_run}: median {median:.2f} s/step = {rate / 1e9:.0f} GFLOP/s achieved; "
              f"the book's training runs at that rate: {total / rate / 60:.0f} min of one process")


if __name__ == "__main__":
    main()
