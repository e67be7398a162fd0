"""Radiographs per second of the full synthesis (patients, findings, projection, display) on this CPU.

Times, in one run:
  1. one patient (``make_patient``: 3D deformation of the CT and its organs),
  2. one radiograph of an existing patient with the findings of real IU studies (single thread),
  3. end to end: ``build_cache`` of the first N IU studies' radiographs with W worker processes
     (patients, findings, rendering, uint8 cache with checksums) -- the number that matters.

    python benchmarks/synthesis_rate.py [--studies 600] [--workers 2] [--size 256]

Prints a table and a JSON line.  Target: >= 40 radiographs/s end to end on 2 cores.
"""
from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()

    from refers_lite.data.synthesis.anatomy import load_base_anatomy, make_patient
    from refers_lite.data.reports.corpus import ReportCorpus
    from refers_lite.data.synthesis.domain_build import shard_size_for
    from refers_lite.data.loading.image_cache import build_cache
    from refers_lite.data.synthesis.source_domain import plan_source_items
    from refers_lite.data.synthesis.render import _MEMO, render_item, render_item_shard

    torch.set_num_threads(1)
    base = load_base_anatomy()
    t = time.perf_counter()
    make_patient(base, 1000)
    patient_s = time.perf_counter() - t

    kept = [r for r in ReportCorpus.from_iu().kept if r.record.images][: args.studies]
    shard = shard_size_for(sum(len(r.record.images) for r in kept))
    items, studies = plan_source_items([r.record for r in kept], [r.text for r in kept], shard_size=shard)
    abnormal = sum(bool(s.requests) for s in studies) / len(studies)
    first = [it for it in items if it.patient == items[0].patient]
    render_item(first[0], args.size)  # builds the patient
    t = time.perf_counter()
    for it in first[1:65]:
        render_item(it, args.size)
    per_image_s = (time.perf_counter() - t) / len(first[1:65])
    _MEMO["patients"].clear()
    _MEMO["lesions"].clear()

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        build_cache(tmp, len(items), functools.partial(render_item_shard, items=items, size=args.size),
                    fingerprint={"benchmark": 1}, image_size=args.size, shard_size=shard,
                    workers=args.workers, desc="benchmark", progress=False)
        build_s = time.perf_counter() - t
    rate = len(items) / build_s
    print(f"threads/worker=1 workers={args.workers} size={args.size} studies={len(studies)} images={len(items)} "
          f"abnormal studies={abnormal:.0%}")
    print(f"make_patient                         {patient_s:8.2f} s")
    print(f"one radiograph (existing patient)    {per_image_s * 1e3:8.1f} ms  ({1 / per_image_s:.1f}/s per core)")
    print(f"end to end build_cache               {build_s:8.1f} s   ({rate:.1f} radiographs/s; target >= 40)")
    print(json.dumps(dict(workers=args.workers, size=args.size, studies=len(studies), images=len(items),
                          patient_s=round(patient_s, 2), per_image_ms=round(per_image_s * 1e3, 1),
                          build_s=round(build_s, 1), per_s=round(rate, 1))))


if __name__ == "__main__":
    main()
