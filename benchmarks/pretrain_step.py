"""Seconds per pre-training step of the paper-sized REFERS, fp32 against bf16 autocast, in one run.

The paper-sized model: radiograph transformer ViT-B/16 at 224 px with recurrent concatenation,
view fusion over 3 views, a BERT-base-sized text encoder (untrained weights: the timing does not
depend on them, and no BERT-base ships offline), the report transformer of the paper profile.
Batch: 2 studies x 3 views, 100-token reports. One step = forward, backward, clip, SGD step.

    python benchmarks/pretrain_step.py [--steps 3] [--studies 2] [--device cpu|cuda] [--profile paper]

The variants alternate step by step so that machine noise hits both alike; the ratio is what
to read. Prints one table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from refers_lite.config import get_config
from refers_lite.models import REFERS
from refers_lite.train import build_optimizer, resolve_precision


def make_batch(cfg, studies: int, report_len: int, device):
    m = cfg.model
    g = torch.Generator().manual_seed(0)
    images = torch.rand(studies, m.num_views, m.in_chans, m.image_size, m.image_size, generator=g)
    report = torch.randint(5, m.vocab_size, (studies, report_len), generator=g)
    report[:, 0], report[:, -1] = m.bos_id, m.eos_id
    text = torch.randint(1000, 30000, (studies, report_len), generator=g)
    return {"images": images.to(device), "view_mask": torch.ones(studies, m.num_views, dtype=torch.bool, device=device),
            "report_ids": report.to(device), "text_ids": text.to(device),
            "text_mask": torch.ones_like(text).to(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step each)")
    ap.add_argument("--report-len", type=int, default=100)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--variants", default="fp32,bf16")
    args = ap.parse_args()

    device = torch.device(args.device)
    overrides = {"model": {"text_encoder": "random", "random_text_width": 768, "random_text_depth": 12,
                           "random_text_heads": 12, "decoder_dropout": 0.0}}
    if args.profile != "paper":
        overrides = {}
    cfg = get_config(args.profile, overrides)
    torch.manual_seed(0)
    model = REFERS.from_config(cfg).to(device).train()
    opt, _ = build_optimizer(model, cfg, device)
    batch = make_batch(cfg, args.studies, min(args.report_len, cfg.model.max_report_len), device)
    n_params = sum(p.numel() for p in model.parameters())
    variants = args.variants.split(",")
    precisions = {v: resolve_precision(v, device) for v in variants}

    def step(v: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with precisions[v].autocast(device):
            loss = model(**batch).losses.total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for v in variants:  # warm-up
        step(v)
    times = {v: [] for v in variants}
    for _ in range(args.steps):
        for v in variants:
            times[v].append(step(v))

    radiographs = args.studies * cfg.model.num_views
    print(f"REFERS pre-training step, profile={args.profile}: {n_params / 1e6:.1f}M parameters, "
          f"{args.studies} studies x {cfg.model.num_views} views at {cfg.model.image_size}px, device={device}, "
          f"threads={torch.get_num_threads()}, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'variant':<8} {'s/step (median)':>16} {'radiographs/s':>14} {'studies/s':>10} {'speed-up':>9}")
    base = statistics.median(times[variants[0]])
    result = {"profile": args.profile, "device": str(device), "studies": args.studies, "params_m": round(n_params / 1e6, 1),
              "cpu_count": os.cpu_count()}
    for v in variants:
        med = statistics.median(times[v])
        print(f"{v:<8} {med:>16.3f} {radiographs / med:>14.2f} {args.studies / med:>10.2f} {base / med:>8.2f}x")
        result[f"{v}_s_per_step"] = round(med, 4)
        result[f"{v}_radiographs_per_s"] = round(radiographs / med, 3)
    if len(variants) > 1:
        result["speedup"] = round(base / statistics.median(times[variants[-1]]), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
