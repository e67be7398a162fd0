"""Fine-tuning options of the course profile, one cell at a time: what an option does to the LP-FT start, the
validation curve and the test AUC of the same encoder, domain, label ratio and seed.

Each variant is ``get_finetune_config(--profile)`` plus its overrides (``name:key=value,key=value``), run by
``training.finetune.finetune`` exactly as the experiment grid runs a cell (from scratch: with REFERS's
architecture, ``Grid.scratch_model``). For every cell it prints the first training loss (the probe head's loss
on the training-mode forward, right after LP-FT's probe), the validation mean AUC at step 0 and at each
evaluation, the step kept, the steps run, the test mean AUC and the seconds, then the mean test AUC of each
variant over its cells.

    E=runs/experiments/demo/pretrain/refers-2d54cb485cae/encoder.pt   # the book's shared REFERS
    OMP_NUM_THREADS=1 python benchmarks/finetune_options.py --encoder $E \\
        --cells nih:0.01:0,1,2 vindr:0.01:0,1,2 nih:1.0:0 \\
        --variants base:freeze_batchnorm=false frozen_bn:freeze_batchnorm=true uncapped:max_steps=0
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from refers_lite.experiments import Grid
from refers_lite.training.finetune import finetune, get_finetune_config


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, over = text.partition(":")
    return name, [o for o in over.split(",") if o]


def parse_cell(text: str) -> list[tuple[str, float, int]]:
    domain, ratio, seeds = text.split(":")
    return [(domain, float(ratio), int(s)) for s in seeds.split(",")]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="data/synthetic")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--encoder", default="scratch", help="an exported encoder.pt, or 'scratch'")
    ap.add_argument("--cells", nargs="+", default=["nih:0.01:0,1,2"], help="domain:ratio:seed,seed,...")
    ap.add_argument("--variants", nargs="+", default=["base:"], help="name:key=value,key=value")
    ap.add_argument("--out", default="runs/finetune_options")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.data_root)
    grid = Grid(args.profile, root, Path(args.out), ("scratch",), (), ())
    scratch_model = grid.scratch_model() if args.encoder == "scratch" else None
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
          f"encoder {args.encoder}")
    tests: dict[str, list[float]] = {}
    for text in args.variants:
        name, over = parse_variant(text)
        cfg = get_finetune_config(args.profile, over)
        for cell in args.cells:
            for domain, ratio, seed in parse_cell(cell):
                out = Path(args.out) / f"{name}-{domain}-{ratio:g}-s{seed}"
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.time()
                res = finetune(args.encoder, root / domain, ratio, seed, out, cfg=cfg, profile=args.profile,
                               progress=False, reuse=False, scratch_model=scratch_model)
                recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                vals = [r["val_mean_auc"] for r in recs if "val_mean_auc" in r]
                first = next((r["loss"] for r in recs if "loss" in r), float("nan"))
                print(f"{name:>12} {domain:>6} {ratio:<5g} seed {seed}: first loss {first:8.3f}  val "
                      f"{' '.join(f'{v:.3f}' for v in vals)}  kept step {res.best_step}/{res.steps}  test "
                      f"{res.test_mean_auc:.3f}  {time.time() - t0:.0f} s", flush=True)
                tests.setdefault(name, []).append(res.test_mean_auc)
    for name, v in tests.items():
        print(f"{name:>12}: mean test AUC {np.mean(v):.4f} over {len(v)} cells")


if __name__ == "__main__":
    main()
