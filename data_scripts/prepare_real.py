#!/usr/bin/env python
"""Prepare a real dataset from your disk as a domain directory (image cache, domain.json, boxes.csv, splits/).

    python data_scripts/prepare_real.py nih      --data-root ~/data/ChestXray-NIHCC        --out data/real/nih
    python data_scripts/prepare_real.py vindr    --data-root ~/data/vinbigdata             --out data/real/vindr --workers 2
    python data_scripts/prepare_real.py shenzhen --data-root ~/data/ChinaSet_AllFiles      --out data/real/shenzhen
    python data_scripts/prepare_real.py covid    --data-root ~/src/covid-chestxray-dataset --out data/real/covid_t1 --task 1
    python data_scripts/prepare_real.py covid    --data-root ~/src/covid-chestxray-dataset --out data/real/covid_t2 --task 2
    python data_scripts/prepare_real.py mimic    --data-root ~/data/mimic-cxr-jpg/2.0.0    --out data/real/mimic

Expected layouts, labels and the error policy: ``refers_lite/data/real/real_datasets.py``. Nothing is
downloaded. ``--limit N`` keeps N images (a quick look; chosen by a hash of the image id, the same
on every run). A second run with the same inputs reuses the image cache; a run stopped by a
corrupt image resumes once the file is fixed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    from refers_lite.data.real.real_datasets import ImageReadError, RealDatasetError, prepare_real_domain
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from refers_lite.data.real.real_datasets import ImageReadError, RealDatasetError, prepare_real_domain

CHOICES = ("nih", "vindr", "shenzhen", "covid", "covid_t1", "covid_t2", "mimic")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=CHOICES, help="which dataset (covid: with --task 1 or 2)")
    ap.add_argument("--data-root", required=True, type=Path, help="your copy of the dataset, as released")
    ap.add_argument("--out", required=True, type=Path, help="the domain directory to write")
    ap.add_argument("--workers", type=int, default=1, help="processes reading images (default 1)")
    ap.add_argument("--limit", type=int, default=None, help="only N images (chosen by a hash of the image id)")
    ap.add_argument("--task", type=int, choices=(1, 2), default=1,
                    help="covid only: 1 = COVID-19 vs rest (default), 2 = viral vs bacterial pneumonia")
    ap.add_argument("--reports-root", type=Path, default=None,
                    help="mimic only: folder holding files/p10/.../sNNN.txt reports (default: --data-root)")
    ap.add_argument("--image-size", type=int, default=256, help="side of the stored square images (default 256)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the 70/10/20 split (default 0)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    name = f"covid_t{args.task}" if args.dataset == "covid" else args.dataset
    if args.reports_root is not None and name != "mimic":
        ap.error("--reports-root is for mimic only")
    t0 = time.perf_counter()
    try:
        summary = prepare_real_domain(name, args.data_root, args.out, image_size=args.image_size,
                                      workers=args.workers, limit=args.limit, seed=args.seed,
                                      reports_root=args.reports_root, progress=not args.no_progress)
    except (RealDatasetError, FileNotFoundError, ImageReadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    print(f"\n{name}: {summary['n_items']:,} images -> {args.out} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
