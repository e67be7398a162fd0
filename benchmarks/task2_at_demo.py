"""Does Task 2 (study-report consistency, Eq. 2) learn at the demo size? Variants side by side.

Each variant pre-trains the demo REFERS on the rendered IU source domain for ``--steps`` steps and
reports the last validation consistency loss beside chance (a batch of B studies: ln B, averaged
over the validation batches as the loss is). ``overfit64`` trains on 64 studies without
augmentation: it shows the loss and its gradients work (the model can memorise pairs), so a
variant at chance on the full data has found no pairing that generalises.

    python benchmarks/task2_at_demo.py --data-root data/synthetic --variants baseline lowlr tau03
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from refers_lite.config import deep_update, get_config
from refers_lite.data.loading.source_studies import SourceStudies, resolve_report_tokenizer
from refers_lite.training.learning_checks import consistency_chance
from refers_lite.training.pretrain import Pretrainer

VARIANTS = {
    "baseline": {},
    "no_task1": {"loss": {"use_generation": False}},
    "learn_tau": {"loss": {"learn_temperature": True}},
    "tau03": {"loss": {"temperature": 0.03}},
    "lowlr": {"train": {"lr_vision": 3e-4, "lr_text": 1e-4}},
    "noaug": {"data": {"augment": False, "hflip_prob": 0.0}},
    "text_frozen": {"model": {"text_freeze_layers": 6}},
    "px128": {"model": {"image_size": 128, "patch_size": 16}},
    "overfit64": {"data": {"augment": False, "hflip_prob": 0.0}},
}


def run(name: str, root: Path, steps: int, out: Path) -> dict:
    vocab = resolve_report_tokenizer(root, None).vocab_size
    base = {"data": {"source": "source", "root": str(root)}, "model": {"vocab_size": max(vocab, 1972)},
            "train": {"max_steps": steps, "warmup_steps": max(1, steps // 10), "log_every": 10,
                      "val_every": max(1, steps // 3)}}
    cfg = get_config("demo", deep_update(base, VARIANTS[name]))
    train = SourceStudies(root, "train", max_report_len=cfg.model.max_report_len)
    val = SourceStudies(root, "validation", max_report_len=cfg.model.max_report_len,
                        report_tokenizer=train.report_tokenizer)
    if name == "overfit64":
        sub = torch.utils.data.Subset(train, range(min(64, len(train))))
        sub.report_tokenizer = train.report_tokenizer
        train = sub
    t0 = time.time()
    Pretrainer(cfg, train, val, out / name, progress=False).fit(resume=False)
    recs = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
    tr = [r["loss_consistency"] for r in recs if "loss_consistency" in r][-5:]
    va = [r["val_loss_consistency"] for r in recs if "val_loss_consistency" in r]
    batch = min(cfg.train.batch_size, len(val))
    return {"variant": name, "steps": steps, "train (last 5)": sum(tr) / len(tr), "validation": va[-1],
            "chance": consistency_chance(len(val), batch), "seconds": time.time() - t0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=Path("runs/task2_at_demo"))
    args = ap.parse_args()
    print(f"{'variant':>12} {'steps':>5} {'train':>7} {'val':>7} {'chance':>7} {'val-chance':>10} {'s':>6}")
    for name in args.variants:
        r = run(name, args.data_root / "source", args.steps, args.out)
        print(f"{r['variant']:>12} {r['steps']:>5} {r['train (last 5)']:7.4f} {r['validation']:7.4f} "
              f"{r['chance']:7.4f} {r['validation'] - r['chance']:+10.4f} {r['seconds']:6.0f}", flush=True)


if __name__ == "__main__":
    main()
