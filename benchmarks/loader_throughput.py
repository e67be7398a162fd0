"""Studies per second through a DataLoader: the memory-mapped uint8 cache against decoding PNG files.

In a temporary folder: a placeholder source domain (``write_placeholder_source``: ~600 studies,
~1,200 images of 256 x 256; smooth grey placeholders, not radiographs), and every cached image also
written as a PNG file. Two datasets return the same items ({"images": uint8 (n_views, 1, S, S),
"report_ids", "text", "study_id"}):

    cache   refers_lite.data.loading.source_studies.SourceStudies: one ImageCache.images call per study
    png     the same studies, each view opened and decoded with PIL from its PNG file

Both go through a DataLoader with the same batch size, workers, shuffled order and collate (views
padded to the study with the most, a view mask, report ids padded). Each loader is made once
(persistent workers) and warmed up by one pass, so the files of both sit in the page cache; then
passes alternate cache, png, cache, png, ... ``--repeats`` times and the median pass is reported.
The ratio is what to read: the machine is shared and noisy.

    python benchmarks/loader_throughput.py [--studies 600] [--batch 32] [--workers 2] [--repeats 3]
    OMP_NUM_THREADS=1 python benchmarks/loader_throughput.py --workers 0   # loading in the main process

With ``--workers 0`` the collate runs in the main process with torch's intra-op threads; on a busy
2-core machine every small parallel copy then waits for a descheduled thread (see benchmarks/README.md),
hence ``OMP_NUM_THREADS=1`` there. DataLoader workers use one thread each by themselves.

Prints one table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate

from refers_lite.data.reports.report_tokenizer import ReportTokenizer
from refers_lite.data.loading.source_studies import SourceStudies, write_placeholder_source


class PngStudies(Dataset):
    """The studies of ``studies.csv`` with each view decoded from ``png_dir/<image_id>.png`` per item."""

    def __init__(self, root: Path, png_dir: Path, max_report_len: int = 128):
        df = pd.read_csv(root / "studies.csv", dtype=str, keep_default_na=False)
        tok = ReportTokenizer.load(root / "report_tokenizer.json")
        self.paths = [[png_dir / f"{i}.png" for i in ids.split(";")] for ids in df["image_ids"]]
        self.report_ids = [tok.encode(t, max_report_len) for t in df["text"]]
        self.texts, self.study_ids = df["text"].tolist(), df["study_id"].tolist()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        views = []
        for p in self.paths[i]:
            with Image.open(p) as im:
                views.append(np.asarray(im))  # (S, S) uint8, decoded
        return {"images": torch.from_numpy(np.stack(views)).unsqueeze(1),  # (n_views, 1, S, S)
                "report_ids": self.report_ids[i], "text": self.texts[i], "study_id": self.study_ids[i]}


def pad_collate(items: list[dict]) -> dict:
    """Studies -> images (B, V_max, 1, S, S) uint8 zero-padded, view_mask (B, V_max), report_ids (B, T).

    ``default_collate`` stacks straight into shared memory in a worker process, which saves a copy of
    the whole batch on its way to the main process (~10 % of a cache pass; the same for both variants)."""
    n_views = [it["images"].shape[0] for it in items]
    v = max(n_views)
    images = default_collate([F.pad(it["images"], (0, 0, 0, 0, 0, 0, 0, v - n))  # (V_max, C, S, S) each
                              for it, n in zip(items, n_views)])  # (B, V_max, C, S, S)
    view_mask = torch.arange(v) < torch.tensor(n_views)[:, None]  # (B, V_max)
    reports = [torch.as_tensor(it["report_ids"]) for it in items]
    report_ids = torch.nn.utils.rnn.pad_sequence(reports, batch_first=True, padding_value=0)  # (B, T)
    return {"images": images, "view_mask": view_mask, "report_ids": report_ids,
            "text": [it["text"] for it in items], "study_id": [it["study_id"] for it in items]}


def make_loader(ds: Dataset, batch: int, workers: int, seed: int) -> DataLoader:
    return DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed),
                      num_workers=workers, collate_fn=pad_collate, persistent_workers=workers > 0,
                      prefetch_factor=2 if workers > 0 else None)


def one_pass(loader: DataLoader) -> tuple[float, int]:
    """Seconds for one pass over ``loader`` and the number of real (unpadded) images it delivered."""
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        n += int(b["view_mask"].sum())
    return time.perf_counter() - t0, n


def per_item_us(ds: Dataset, n: int = 200) -> float:
    """Median microseconds of one ``ds[i]`` in this process (no loader, no collate)."""
    times = []
    for i in range(min(n, len(ds))):
        t0 = time.perf_counter()
        ds[i]
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=600)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32, help="studies per batch")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per variant (after one warm-up pass each)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="loader_throughput_") as tmp:
        t0 = time.perf_counter()
        root = write_placeholder_source(Path(tmp) / "source", n_studies=args.studies, image_size=args.image_size,
                                        seed=args.seed)
        cache_ds = SourceStudies(root, split=None)
        png_dir = Path(tmp) / "png"
        png_dir.mkdir()
        for image_id, item in zip(cache_ds.cache.index["image_id"], cache_ds.cache.index["item"]):
            Image.fromarray(cache_ds.cache.image(item)).save(png_dir / f"{image_id}.png")
        png_ds = PngStudies(root, png_dir)
        setup_s = time.perf_counter() - t0
        png_mb = sum(p.stat().st_size for p in png_dir.iterdir()) / 2**20
        n_images = cache_ds.n_images

        variants = {"cache": cache_ds, "png": png_ds}
        us = {v: per_item_us(ds) for v, ds in variants.items()}
        loaders = {v: make_loader(ds, args.batch, args.workers, args.seed) for v, ds in variants.items()}
        for v, loader in loaders.items():  # warm-up: worker start, page cache
            one_pass(loader)
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeats):
            for v, loader in loaders.items():
                dt, n = one_pass(loader)
                assert n == n_images, (v, n, n_images)
                times[v].append(dt)
        del loaders  # stops the persistent workers before the folder goes

    print(f"DataLoader throughput: {args.studies} studies, {n_images:,} images of {args.image_size}x{args.image_size} "
          f"uint8 (PNG files {png_mb:.0f} MiB), batch {args.batch} studies, workers={args.workers}, "
          f"cpu_count={os.cpu_count()}, main-process threads={torch.get_num_threads()}, torch {torch.__version__}, {platform.processor() or platform.machine()}; "
          f"set-up {setup_s:.1f} s")
    print(f"{'variant':<8} {'s/pass (median)':>16} {'images/s':>10} {'studies/s':>10} {'us/study in-process':>20} "
          f"{'speed-up':>9}")
    med = {v: statistics.median(t) for v, t in times.items()}
    result = {"studies": args.studies, "images": n_images, "image_size": args.image_size, "batch": args.batch,
              "workers": args.workers, "repeats": args.repeats, "cpu_count": os.cpu_count(),
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    for v in variants:
        print(f"{v:<8} {med[v]:>16.3f} {n_images / med[v]:>10.0f} {args.studies / med[v]:>10.0f} {us[v]:>20.0f} "
              f"{med['png'] / med[v]:>8.2f}x")
        result[f"{v}_s_per_pass"] = round(med[v], 4)
        result[f"{v}_images_per_s"] = round(n_images / med[v], 1)
        result[f"{v}_us_per_study_in_process"] = round(us[v], 1)
    result["ratio"] = round(med["png"] / med["cache"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
