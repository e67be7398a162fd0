"""Which levers make REFERS learn at course scale? Each variant pre-trains on the rendered IU source domain
and is measured on held-out studies (``refers_lite.learning_checks``):

* validation consistency loss (Eq. 2) beside chance (ln b per batch),
* validation image -> report Recall@10 over the distinct report texts, beside its chance K / distinct,
* mean pairwise cosine of the validation studies' v^k (collapse: near 1),
* a linear probe of the frozen image encoder on the rendered findings (test split), beside the same
  architecture at random initialisation (seed 0 initial weights, as the run starts).

Every variant is the ``demo`` REFERS of the experiment grid (``Grid.pretrain_config``: source domain, flips
with side-swapped reports) plus the overrides below; results are appended to ``--out/levers.jsonl``, one
line per variant and step budget, so the book's table (``book/demo_diagnosis.md``) comes from this file.

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
from refers_lite.data.source_studies import SourceStudies
from refers_lite.experiments import METHODS, Grid
from refers_lite.learning_checks import consistency_chance, source_probe, study_report_checks
from refers_lite.models import REFERS
from refers_lite.train import Pretrainer, seed_everything

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
    "resnet_proj_ft_b64": {"model": {"encoder": "resnet18", "study_projection": "mlp", "text_freeze_layers": 6},
                           "train": {"batch_size": 64}},
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(name: str, data_root: Path, steps: int, out: Path, probe: bool) -> dict:
    grid = Grid("demo", data_root, out, ("refers",), (), (), pretrain_overrides={
        "train": {"max_steps": steps, "warmup_steps": max(1, steps // 10), "val_every": max(1, steps // 4)}})
    over = json.loads(json.dumps(VARIANTS[name]))
    base = grid.pretrain_config(METHODS["refers"]).to_dict()
    from refers_lite.config import get_config
    cfg = get_config("demo", deep_update({k: v for k, v in base.items() if k != "profile"}, over))
    root = Path(cfg.data.root)
    train = SourceStudies(root, "train", max_report_len=cfg.model.max_report_len)
    val = SourceStudies(root, "validation", max_report_len=cfg.model.max_report_len,
                        report_tokenizer=train.report_tokenizer)
    run_dir = out / f"{name}-{steps}"
    t0 = time.time()
    trainer = Pretrainer(cfg, train, val, run_dir, progress=False)
    trainer.fit(resume=False)
    seconds = time.time() - t0
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    va = [r for r in recs if "val_loss_consistency" in r]
    model = trainer.module.eval()
    batch = min(cfg.train.batch_size, len(val))
    res = {"variant": name, "overrides": VARIANTS[name], "steps": steps, "batch": cfg.train.batch_size,
           "epochs": round(steps * cfg.train.batch_size / len(train), 2), "train_seconds": round(seconds, 1),
           "precision": trainer.precision.name, "cpu": cpu_name(), "threads": torch.get_num_threads(),
           "val consistency": va[-1]["val_loss_consistency"] if va else float("nan"),
           "val consistency chance": consistency_chance(len(val), batch),
           "val consistency curve": [(r["step"], round(r["val_loss_consistency"], 4)) for r in va],
           "val generation": va[-1].get("val_loss_generation", float("nan")) if va else float("nan")}
    res.update(study_report_checks(model, cfg, val))
    if probe:
        pre = source_probe(model.encoder, root, cfg.model.image_size)
        seed_everything(cfg.train.seed)  # the initial weights of the run
        rand = source_probe(REFERS.from_config(cfg).encoder.eval(), root, cfg.model.image_size)
        res.update({"probe AUC": pre["mean AUC"], "probe AUC random init": rand["mean AUC"],
                    "probe per finding": pre["per finding"], "probe random per finding": rand["per finding"]})
    res["total_seconds"] = round(time.time() - t0, 1)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--variants", nargs="+", default=["demo", "conv_proj"], choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/course_levers"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{'variant':>16} {'steps':>5} {'val Eq.2':>8} {'chance':>6} {'R@10':>6} {'chance':>6} {'cos v':>6} "
          f"{'probe':>6} {'random':>6} {'s':>5}", flush=True)
    for name in args.variants:
        r = run(name, args.data_root, args.steps, args.out, not args.no_probe)
        with open(args.out / "levers.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"{name:>16} {r['steps']:>5} {r['val consistency']:8.4f} {r['val consistency chance']:6.3f} "
              f"{r['R@10']:6.3f} {r['R@10 chance']:6.3f} {r['cosine v']:6.4f} {r.get('probe AUC', math.nan):6.3f} "
              f"{r.get('probe AUC random init', math.nan):6.3f} {r['total_seconds']:5.0f}", flush=True)


if __name__ == "__main__":
    main()
