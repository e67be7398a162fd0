"""The MoCo v2-style baseline at the ``demo`` size: does its pretext task learn, and what does its encoder give at 1 %
of the labels, for a few learning rates of AdamW (the course profiles' optimizer)?

For each ``--lrs`` value it pre-trains MoCo exactly as the experiment grid does at ``--profile``
(``experiments.moco_pretrain_kwargs``: REFERS's steps and radiographs per step, AdamW) except for the learning rate,
in ``--out/moco-lr{lr}``, then fine-tunes the encoder at NIH-like and VinBigData-like 1 % (three seeds, the
profile's recipe, as the grid's cells). ``--runs`` summarises MoCo run folders already trained (the grid's own,
``runs/experiments/demo/pretrain/moco-*``) and fine-tunes their encoders the same way. Printed per run: the
InfoNCE loss beside its chance ``log(1 + K)`` and the positive's top-1 rate among the queue (``pos_top1``),
averaged over each fifth of the run, then the test mean AUC of each cell and their mean and std.

    OMP_NUM_THREADS=2 python benchmarks/moco_at_demo.py --lrs 1e-4 --runs runs/experiments/demo/pretrain/moco-*
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from refers_lite.experiments import METHODS, Grid, moco_pretrain_kwargs
from refers_lite.training.finetune import finetune

CELLS = (("nih", 0.01), ("vindr", 0.01))
SEEDS = (0, 1, 2)


def pretext_summary(run: Path) -> str:
    """Loss and pos_top1, each averaged over five equal parts of the run (metrics.jsonl)."""
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    recs = [r for r in recs if "pos_top1" in r]
    parts = np.array_split(np.arange(len(recs)), 5)
    loss = " ".join(f"{np.mean([recs[i]['loss'] for i in p]):.2f}" for p in parts if len(p))
    top1 = " ".join(f"{np.mean([recs[i]['pos_top1'] for i in p]):.2f}" for p in parts if len(p))
    settings = json.loads((run / "settings.json").read_text()) if (run / "settings.json").is_file() else {}
    queue = settings.get("queue_size", 4096)
    steps = recs[-1]["step"] if recs else 0
    return (f"lr {settings.get('lr', '?')}, {settings.get('optimizer', 'sgd')}, {steps} steps;"
            f" loss by fifths {loss} (chance log(1 + K) = {math.log(1 + queue):.2f} at K = {queue});"
            f" pos_top1 by fifths {top1}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--lrs", nargs="*", type=float, default=[1e-4], help="AdamW learning rates to pre-train with")
    ap.add_argument("--runs", nargs="*", type=Path, default=[], help="MoCo run folders already trained")
    ap.add_argument("--out", type=Path, default=Path("runs/moco_at_demo"))
    args = ap.parse_args(argv)
    from refers_lite.baselines.moco import pretrain_moco
    grid = Grid(args.profile, args.data_root, args.out, ("moco",), (), ())
    kw = moco_pretrain_kwargs(grid)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"thread(s); the grid's MoCo at {args.profile}: {kw}", flush=True)
    runs = list(args.runs)
    renders = grid.pretrain_config(METHODS["refers"]).data.renders
    for lr in args.lrs:
        run = args.out / f"moco-lr{lr:g}"
        t0 = time.time()
        pretrain_moco(args.profile, args.data_root / "source", run, progress=False, renders=renders,
                      **{**kw, "lr": lr})
        print(f"pre-trained {run} in {time.time() - t0:.0f} s", flush=True)
        runs.append(run)
    for run in runs:
        print(f"{run}: {pretext_summary(run)}", flush=True)
        for domain, ratio in CELLS:
            aucs = []
            for seed in SEEDS:
                out = args.out / "finetune" / f"{run.name}-{domain}-{ratio:g}-s{seed}"
                res = finetune(str(run / "encoder.pt"), args.data_root / domain, ratio, seed, out,
                               cfg=grid.finetune_config(METHODS["moco"]), profile=args.profile, progress=False)
                aucs.append(res.test_mean_auc)
            print(f"  {domain} {ratio:g}: test mean AUC {' '.join(f'{a:.3f}' for a in aucs)}; "
                  f"{100 * np.mean(aucs):.1f} ± {100 * np.std(aucs, ddof=1):.1f}", flush=True)


if __name__ == "__main__":
    main()
