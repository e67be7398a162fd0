"""`refers-lite data import --mimic` on generated MIMIC-CXR-JPG trees: images / s, MIMIC-CXR projection, memory.

For each size in ``--sizes`` a tree in the official layout (``files/p1x/p<subject>/s<study>/<dicom_id>.jpg``,
report ``.txt`` files, gzipped metadata and split tables; two films per study, placeholder pictures of
``--file-size`` pixels with film grain) is generated (not timed), then imported in a fresh process
(:func:`refers_lite.data.real.importer.import_mimic`, ``--workers`` processes, cache at 256 px). Printed per size:
wall seconds, images / s, the peak resident memory (``ru_maxrss``) of the importing process (before and after the
import) and of its workers, and, from a second, untimed import of the same tree under ``tracemalloc``, the peak of
the Python allocations the import makes in the importing process; two sizes show whether memory grows with the
input (printed: bytes per added image, and the projection for 377,110 images). A ``--full-size`` sample at MIMIC-CXR-JPG's usual film size
(3056 x 2544) gives the rate the projection for MIMIC-CXR's 377,110 images uses. Then a kill test: the largest
import is started again into a fresh folder, killed (SIGKILL) part-way, and re-run; printed: how many images the
second run had to read.

    OMP_NUM_THREADS=1 python benchmarks/import_rate.py --workers 1            # defaults: a minute or two
    python benchmarks/import_rate.py --sizes 2000,8000 --workers 2 --full-size 64

Everything is written under a temporary folder (``--tmp``), deleted at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIMIC_IMAGES = 377_110  # MIMIC-CXR-JPG 2.0.0: 377,110 JPG images (Johnson et al. 2019)


def _one(root: str, out: str, workers: int, trace: bool = False) -> None:
    """Child: import one tree, print a JSON line with the time and the memory of this process (and its workers).

    ``rss_before_mb`` is the peak resident memory once torch and tokenizers are imported (before the import),
    ``rss_main_mb`` the peak after it; with ``trace``, ``traced_peak_mb`` is tracemalloc's peak of the Python
    allocations (numpy's included) made during the import, a measure the allocator and the fixed imports do not blur
    (tracemalloc slows the import, so such a run is not timed)."""
    import tracemalloc
    from refers_lite.data.real.importer import import_mimic
    import refers_lite.data.loading.source_studies  # noqa: F401  (torch, tokenizers: a fixed ~2 s, not timed)
    import refers_lite.data.reports.structured_labels  # noqa: F401
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    summary = import_mimic(root, out, workers=workers, progress=False, log=None)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    tracemalloc.stop()
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"images": summary["images"], "read": summary["rendered_images"], "seconds": seconds,
                      "rss_before_mb": before, "rss_main_mb": me, "rss_worker_mb": kids, "traced_peak_mb": traced}))


def _run_child(root: Path, out: Path, workers: int, trace: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--_child", str(root), str(out), str(workers)] + (["--_trace"] if trace else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"import failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _mean_file_kb(root: Path) -> float:
    files = list((root / "files").rglob("*.jpg"))
    return sum(f.stat().st_size for f in files) / max(1, len(files)) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1500,3000", help="images per generated tree (default 1500,3000)")
    ap.add_argument("--file-size", default="512x420", help="generated film size HxW (default 512x420)")
    ap.add_argument("--full-size", type=int, default=24,
                    help="films at 3056x2544 for the projection's rate (default 24; 0: project from the largest tree)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--no-kill-test", action="store_true")
    ap.add_argument("--no-trace", action="store_true", help="skip the second, tracemalloc run of each size")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--_trace", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        _one(a._child[0], a._child[1], int(a._child[2]), trace=a._trace)
        return 0
    from refers_lite.data.real.example_data import write_mimic_tree

    h, w = (int(v) for v in a.file_size.lower().split("x"))
    sizes = [int(s) for s in a.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="import_rate_", dir=a.tmp))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if os.path.exists("/proc/cpuinfo") else "unknown CPU"
    print(f"CPU {cpu}, {os.cpu_count()} cores; workers {a.workers}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; cache 256 px")
    try:
        rows = []
        for n in sizes:
            t0 = time.perf_counter()
            root = write_mimic_tree(tmp / f"tree{n}", n, size=(h, w), seed=n)
            gen = time.perf_counter() - t0
            r = _run_child(root, tmp / f"out{n}", a.workers)
            if not a.no_trace:  # the same import again into a fresh folder, under tracemalloc (not timed)
                r["traced_peak_mb"] = _run_child(root, tmp / f"trace{n}", a.workers, trace=True)["traced_peak_mb"]
                shutil.rmtree(tmp / f"trace{n}", ignore_errors=True)
            rows.append((n, r))
            traced = f", Python allocations during the import {r['traced_peak_mb']:.1f} MiB at peak (tracemalloc)" \
                if r.get("traced_peak_mb") is not None else ""
            print(f"{n:>7,} files {h}x{w} (mean {_mean_file_kb(root):.0f} KB, generated in {gen:.0f} s): imported "
                  f"{r['images']:,} images in {r['seconds']:.1f} s = {r['images'] / r['seconds']:.1f} images/s; "
                  f"peak memory: importer {r['rss_main_mb']:.0f} MiB ({r['rss_before_mb']:.0f} MiB before the "
                  f"import){traced}; largest child process {r['rss_worker_mb']:.0f} MiB")
        if len(rows) >= 2:
            (n0, r0), (n1, r1) = rows[0], rows[-1]
            per = lambda k: (r1[k] - r0[k]) / (n1 - n0) * 2**20  # MiB -> bytes per added image  # noqa: E731
            print(f"marginal rate from {n0:,} to {n1:,} images: {(n1 - n0) / (r1['seconds'] - r0['seconds']):.1f} images/s")
            print(f"memory from {n0:,} to {n1:,} images: importer peak RSS {r0['rss_main_mb']:.0f} -> "
                  f"{r1['rss_main_mb']:.0f} MiB ({per('rss_main_mb'):,.0f} bytes per added image), largest child "
                  f"{r0['rss_worker_mb']:.0f} -> {r1['rss_worker_mb']:.0f} MiB")
            if r0.get("traced_peak_mb") is not None:
                b = per("traced_peak_mb")
                print(f"Python allocations at peak (tracemalloc): {r0['traced_peak_mb']:.1f} -> "
                      f"{r1['traced_peak_mb']:.1f} MiB ({b:,.0f} bytes per added image; for MIMIC-CXR's "
                      f"{MIMIC_IMAGES:,} images about {r1['traced_peak_mb'] + b * (MIMIC_IMAGES - n1) / 2**20:,.0f} MiB)")
        rate, basis = rows[-1][1]["images"] / rows[-1][1]["seconds"], f"{h}x{w} films"
        if a.full_size:
            root = write_mimic_tree(tmp / "full", a.full_size, size=(3056, 2544), seed=7)
            r = _run_child(root, tmp / "out_full", a.workers)
            rate, basis = r["images"] / r["seconds"], "3056x2544 films"
            print(f"{a.full_size:>7,} files 3056x2544 (mean {_mean_file_kb(root):.0f} KB): imported in "
                  f"{r['seconds']:.1f} s = {rate:.1f} images/s (the whole import: tables, reports, images, tokenizer)")
        hours = MIMIC_IMAGES / rate / 3600
        print(f"projected for MIMIC-CXR-JPG ({MIMIC_IMAGES:,} images) at the rate of the {basis}: {hours:.1f} h with "
              f"{a.workers} worker(s) on this CPU (reading from local disk)")
        if not a.no_kill_test:
            n, r = rows[-1]
            root, out = tmp / f"tree{n}", tmp / "out_kill"
            cmd = [sys.executable, __file__, "--_child", str(root), str(out), str(a.workers)]
            n_shards = -(-n // 256)  # the importer's SHARD_SIZE
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            done = 0
            while proc.poll() is None and done < n_shards // 2:  # kill once half of the shards are written
                time.sleep(0.02)
                done = len(list((out / "cache").glob("shard_*.json"))) if (out / "cache").is_dir() else 0
            os.killpg(proc.pid, signal.SIGKILL)  # the child and its workers, as a power cut would
            proc.wait()
            again = _run_child(root, out, a.workers)
            print(f"kill test: import of {n:,} images killed (SIGKILL) with {done} of {n_shards} shards written; the "
                  f"same command then read {again['read']:,} of {again['images']:,} images ({again['seconds']:.1f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
