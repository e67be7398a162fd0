"""Write the findings contact sheet: for each finding, PA and lateral of one patient, with boxes.

    python data_scripts/contact_sheet.py [--out contact_sheet.png] [--severity moderate] [--patient 1000]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from refers_lite.data.synthesis.synthesis_figures import contact_sheet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("_build/figures/contact_sheet.png"))
    ap.add_argument("--severity", default="moderate", choices=["mild", "moderate", "severe"])
    ap.add_argument("--patient", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    fig = contact_sheet(patient=args.patient, seed=args.seed, severity=args.severity)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=130, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
