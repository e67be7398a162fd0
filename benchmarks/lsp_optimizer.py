"""Does LSP (Transformer) learn its source labels? Its label-supervised pre-training (``baselines/lsp.py``)
with the fine-tuning SGD (3e-3, momentum 0.9: the paper's fine-tuning recipe, and LSP's at every profile before
2026-12-07) against REFERS's own course optimizer (AdamW at its image-side learning rate and weight decay: what
``experiments.lsp_pretrain_config`` gives LSP where REFERS pre-trains with AdamW).

Each variant is the chapter 05 LSP of the experiment grid at ``--profile`` (its steps, its radiographs per step,
the films REFERS is given) with only the optimizer changed, trained for ``--steps`` (default: REFERS's) with its
own warm-up and cosine, and evaluated ``--evals`` times on the source validation split: the mean AUC over the
structured labels, and per label at the end. A pixel baseline beside it (logistic regression on 16 x 16
average-pooled films, the same splits) says how much of each label the films show at all.

    OMP_NUM_THREADS=2 python benchmarks/lsp_optimizer.py --data-root data/synthetic --steps 300
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from refers_lite.baselines.lsp import pretrain_lsp
from refers_lite.baselines.pixels import pixel_features
from refers_lite.data.loading.source_studies import SourceRadiographs
from refers_lite.data.reports.structured_labels import LABELS
from refers_lite.experiments import METHODS, Grid, lsp_pretrain_config
from refers_lite.training.finetune import get_finetune_config


def pixel_baseline(train, val, n_train: int = 4000) -> dict[str, float]:
    """Validation AUC per label of a logistic regression on 16 x 16 area-downsampled pixels (the first
    ``n_train`` training films; labels with at least 20 training and 3 validation positives)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    xt, yt = pixel_features(Subset(train, range(min(n_train, len(train)))), size=16)
    xv, yv = pixel_features(val, size=16)
    out = {}
    for j, name in enumerate(LABELS):
        if yt[:, j].sum() >= 20 and yv[:, j].sum() >= 3:
            model = LogisticRegression(C=0.1, max_iter=1000).fit(xt, yt[:, j])
            out[name] = float(roc_auc_score(yv[:, j], model.predict_proba(xv)[:, 1]))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="data/synthetic")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--steps", type=int, default=0, help="0: REFERS's pre-training steps, as the grid gives LSP")
    ap.add_argument("--evals", type=int, default=4, help="validation evaluations over the run")
    ap.add_argument("--variants", nargs="+", default=["sgd", "adamw"], choices=["sgd", "adamw"])
    ap.add_argument("--out", default="runs/lsp_optimizer")
    args = ap.parse_args(argv)

    root = Path(args.data_root)
    grid = Grid(args.profile, root, Path(args.out), ("lsp_transformer",), (), ())
    cfg = lsp_pretrain_config(grid, METHODS["lsp_transformer"]).to_dict()
    steps = args.steps or cfg["max_steps"]
    refers = grid.pretrain_config(METHODS["refers"])
    ref, renders = refers.train, refers.data.renders
    train, val = (SourceRadiographs(root / "source", s, renders=renders if s == "train" else 1)
                  for s in ("train", "validation"))
    sgd = get_finetune_config(args.profile)  # the fine-tuning recipe's optimizer
    optimizers = {"sgd": {"optimizer": "sgd", "lr": sgd.lr, "weight_decay": sgd.weight_decay},
                  "adamw": {"optimizer": "adamw", "lr": ref.lr_vision, "weight_decay": ref.weight_decay}}
    print(f"LSP (Transformer) at {args.profile}: {steps} steps of {cfg['batch_size']} radiographs, "
          f"{len(train):,} training films; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    pixels = pixel_baseline(train, val)
    print(f"pixels + logistic regression (validation): mean AUC {np.mean(list(pixels.values())):.3f} over "
          f"{len(pixels)} labels")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        run_cfg = get_finetune_config(args.profile, {**cfg, **optimizers[name], "min_steps": steps,
                                                     "max_steps": steps, "epochs": args.evals})
        reused = (out / name / "encoder.pt").is_file()  # pretrain_lsp returns a finished run as it is
        t0 = time.time()
        pretrain_lsp("vit", args.profile, root / "source", out / name, cfg=run_cfg, seed=0, progress=False,
                     renders=renders)  # chapter 05's LSP training, with this optimizer
        seconds = time.time() - t0
        records = [json.loads(line) for line in (out / name / "run" / "metrics.jsonl").read_text().splitlines()]
        res = json.loads((out / name / "run" / "result.json").read_text())
        curve = {r["step"]: round(r["val_mean_auc"], 3) for r in records if "val_mean_auc" in r}
        row = {"variant": name, **optimizers[name], "steps": steps, "val_mean_auc": curve,
               "best_val_mean_auc": round(res["val_mean_auc"], 3),
               "test_auc": {k: round(v, 3) for k, v in res["test_auc"].items()},
               "pixel_val_auc": {k: round(v, 3) for k, v in pixels.items()}, "seconds": round(seconds, 1),
               "reused": reused}
        print(f"{name:>6} ({optimizers[name]['optimizer']} {optimizers[name]['lr']:g}): validation mean AUC by step "
              f"{curve}; best {res['val_mean_auc']:.3f}; {'reused' if reused else f'{seconds:.0f} s'}")
        with open(out / "lsp_optimizer.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    common = [k for k in pixels if k in res["test_auc"]]
    print("per label, test AUC of the last variant beside the pixel baseline's validation AUC:")
    for k in common:
        print(f"  {k:>18}: {res['test_auc'][k]:.3f}  pixels {pixels[k]:.3f}")


if __name__ == "__main__":
    main()
