"""Labelled target domains for fine-tuning, rendered from the CT with real label statistics.

Each domain mirrors a dataset of the paper (its classes, its label co-occurrence where a real
table exists, its box positions) and has its own acquisition style (:data:`ACQUISITIONS` in
:mod:`refers_lite.data.synthesis.render`), a domain shift from the IU-like source:

* ``nih``: the 14 ChestX-ray14 labels.  Each image copies the labels and the view position (PA /
  AP) of a row drawn from the real ``Data_Entry_2017_v2020.csv.gz`` (112,120 rows, shipped in
  torchxrayvision), so label frequencies and co-occurrences are real; a finding with radiologist
  boxes in ``BBox_List_2017.csv.gz`` (8 classes, 984 boxes on 1024 x 1024 images) takes the side
  and zone of a real box of its class (box centre left / right of the midline; upper / middle /
  lower by its height).  Splits are grouped by the row's real patient id.
* ``vindr``: VinBigData's 14 labels; each image copies the union of the three radiologists'
  labels of a real image of ``vinbigdata-train.csv.gz``, and each finding the side / zone of that
  image's own boxes (the table has no image widths: sides are cut at the median box centre of the
  whole table, zones at its height terciles).
* ``shenzhen``: tuberculosis vs normal, 336 : 326 as in the real collection.
* ``covid_t1`` / ``covid_t2``: the COVID-19 image data collection's two tasks: COVID-19 vs the rest,
  and viral vs bacterial pneumonia (COVID-19 counts as viral).  COVID-19 renders bilateral,
  peripheral, lower-zone ground glass; other viral pneumonia bilateral perihilar interstitial
  opacities; bacterial pneumonia dense lobar consolidation.  The mix (:data:`COVID_MIX`)
  approximates the collection's; there is no label table for it in torchxrayvision.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .render import FindingRequest, ImageItem

__all__ = ["TARGET_DOMAINS", "TargetPlan", "plan_target_items", "NIH_FINDINGS", "VINDR_FINDINGS", "COVID_MIX"]

NIH_FINDINGS = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Effusion": "pleural_effusion",
    "Infiltration": "infiltration", "Mass": "mass", "Nodule": "nodule", "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax", "Consolidation": "consolidation", "Edema": "edema", "Emphysema": "emphysema",
    "Fibrosis": "fibrosis", "Pleural_Thickening": "pleural_thickening", "Hernia": "hiatal_hernia",
}
VINDR_FINDINGS = {
    "Aortic enlargement": "aortic_enlargement", "Atelectasis": "atelectasis", "Calcification": "calcification",
    "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation", "ILD": "fibrosis",
    "Infiltration": "infiltration", "Lung Opacity": "lung_opacity", "Nodule/Mass": "nodule",
    "Other lesion": "other_lesion", "Pleural effusion": "pleural_effusion",
    "Pleural thickening": "pleural_thickening", "Pneumothorax": "pneumothorax", "Pulmonary fibrosis": "fibrosis",
}
# Approximate make-up of the ieee8023 COVID-19 image data collection's pneumonia images.
COVID_MIX = {"covid": 0.62, "viral": 0.08, "bacterial": 0.16, "other": 0.14}


@dataclass(frozen=True)
class TargetDomainInfo:
    name: str
    task: str  # "multilabel" | "binary"
    classes: tuple[str, ...]
    acquisition: str
    paper_size: int  # images in the real dataset as the paper used it
    source: str


TARGET_DOMAINS: dict[str, TargetDomainInfo] = {
    "nih": TargetDomainInfo("nih", "multilabel", tuple(NIH_FINDINGS), "nih", 112_120,
                            "labels and boxes: NIH ChestX-ray14 tables shipped in torchxrayvision 1.5.7"),
    "vindr": TargetDomainInfo("vindr", "multilabel", tuple(VINDR_FINDINGS), "vindr", 15_000,
                              "labels and boxes: VinBigData train table shipped in torchxrayvision 1.5.7"),
    "shenzhen": TargetDomainInfo("shenzhen", "binary", ("Tuberculosis",), "shenzhen", 662,
                                 "class balance of the Shenzhen TB collection (336 TB, 326 normal)"),
    "covid_t1": TargetDomainInfo("covid_t1", "binary", ("COVID-19",), "covid", 930,
                                 "approximate make-up of the COVID-19 image data collection"),
    "covid_t2": TargetDomainInfo("covid_t2", "binary", ("Viral",), "covid", 930,
                                 "approximate make-up of the COVID-19 image data collection (viral vs bacterial)"),
}


@dataclass
class TargetPlan:
    info: TargetDomainInfo
    items: list[ImageItem]
    labels: np.ndarray  # (N, C) int 0/1
    groups: list[str]  # split groups (real patient ids where known)


def _xrv_table(name: str) -> Path:
    # Locate the package without importing it (importing torchxrayvision.models silences warnings
    # process-wide).
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("torchxrayvision is not installed; its label tables are needed (pip install torchxrayvision)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"torchxrayvision's label table {path} is missing (reinstall torchxrayvision>=1.5.7)")
    return path


def _zone_from_frac(y: float) -> str:
    return "upper" if y < 0.4 else ("middle" if y < 0.6 else "lower")


def _nih_rows(n: int, rng: np.random.Generator, table: Path | None = None, bbox: Path | None = None):
    df = pd.read_csv(table or _xrv_table("Data_Entry_2017_v2020.csv.gz"))
    need = {"Image Index", "Finding Labels", "Patient ID", "View Position"}
    if need - set(df.columns):
        raise ValueError(f"{table}: missing columns {sorted(need - set(df.columns))}")
    boxes = pd.read_csv(bbox or _xrv_table("BBox_List_2017.csv.gz"))
    boxes = boxes.rename(columns={boxes.columns[2]: "x", boxes.columns[3]: "y", boxes.columns[4]: "w",
                                  boxes.columns[5]: "h"})
    by_class = {k: g[["x", "y", "w", "h"]].to_numpy(float) for k, g in boxes.groupby("Finding Label")}
    by_class["Infiltration"] = by_class.pop("Infiltrate", by_class.get("Infiltration", np.zeros((0, 4))))
    rows = df.iloc[np.sort(rng.choice(len(df), size=n, replace=n > len(df)))]
    out = []
    for _, r in rows.iterrows():
        labels = [x for x in str(r["Finding Labels"]).split("|") if x in NIH_FINDINGS]
        reqs = []
        for lab in labels:
            side = zone = None
            b = by_class.get(lab)
            if b is not None and len(b):
                x, y, w, h = b[int(rng.integers(len(b)))]
                cx, cy = (x + w / 2) / 1024, (y + h / 2) / 1024
                side = "right" if cx < 0.5 else "left"  # PA/AP display: patient right on the image left
                zone = _zone_from_frac(cy)
            reqs.append((lab, side, zone))
        view = "ap" if str(r["View Position"]).upper() == "AP" else "pa"
        out.append((reqs, view, f"nih:{r['Patient ID']}"))
    return out


def _vindr_rows(n: int, rng: np.random.Generator, table: Path | None = None):
    df = pd.read_csv(table or _xrv_table("vinbigdata-train.csv.gz"))
    need = {"image_id", "class_name", "x_min", "y_min", "x_max", "y_max"}
    if need - set(df.columns):
        raise ValueError(f"{table}: missing columns {sorted(need - set(df.columns))}")
    bx = df.dropna(subset=["x_min"])
    cx_all = ((bx.x_min + bx.x_max) / 2).median()
    cy = (bx.y_min + bx.y_max) / 2
    q1, q2 = cy.quantile([1 / 3, 2 / 3])
    ids = np.sort(df["image_id"].unique())
    chosen = ids[np.sort(rng.choice(len(ids), size=n, replace=n > len(ids)))]
    groups = dict(tuple(df[df.image_id.isin(set(chosen))].groupby("image_id")))
    out = []
    for iid in chosen:
        g = groups[iid]
        reqs = []
        for lab, gg in g[g.class_name.isin(VINDR_FINDINGS)].groupby("class_name"):
            r = gg.dropna(subset=["x_min"])
            side = zone = None
            if len(r):
                b = r.iloc[int(rng.integers(len(r)))]
                x, y = (b.x_min + b.x_max) / 2, (b.y_min + b.y_max) / 2
                side = "right" if x < cx_all else "left"
                zone = "upper" if y < q1 else ("middle" if y < q2 else "lower")
            reqs.append((lab, side, zone))
        out.append((reqs, "pa", f"vindr:{iid}"))
    return out


def _requests(pairs, mapping: dict[str, str], rng: np.random.Generator) -> tuple[FindingRequest, ...]:
    from .findings import FINDINGS

    out = {}
    for lab, side, zone in pairs:
        finding = mapping[lab]
        spec = FINDINGS.get(finding)
        if spec is None:
            continue
        side = side if side in spec.sides else None
        zone = zone if zone in spec.zones else None
        sev = ("mild", "moderate", "severe")[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
        out.setdefault((finding, side), FindingRequest(finding, side, zone, sev))
    return tuple(out.values())


def plan_target_items(name: str, n: int, *, seed: int = 0, shard_size: int = 256,
                      patient_base: int | None = None) -> TargetPlan:
    """Items, labels and split groups for ``n`` images of target domain ``name`` (see module doc)."""
    if name not in TARGET_DOMAINS:
        raise ValueError(f"unknown target domain {name!r}; known: {sorted(TARGET_DOMAINS)}")
    if n < 1:
        raise ValueError(f"target domain {name}: need at least 1 image, got {n}")
    info = TARGET_DOMAINS[name]
    rng = np.random.default_rng([seed, sum(map(ord, name)), 31])
    base = patient_base if patient_base is not None else 10_000 * (1 + sorted(TARGET_DOMAINS).index(name))
    rows = []  # (requests, view, group, label vector)
    if name in ("nih", "vindr"):
        raw = _nih_rows(n, rng) if name == "nih" else _vindr_rows(n, rng)
        mapping = NIH_FINDINGS if name == "nih" else VINDR_FINDINGS
        for pairs, view, group in raw:
            lab = np.array([int(any(p[0] == c for p in pairs)) for c in info.classes])
            rows.append((_requests(pairs, mapping, rng), view, group, lab))
    elif name == "shenzhen":
        for i in range(n):
            tb = rng.random() < 336 / 662
            reqs = (FindingRequest("tuberculosis", None, "upper", ("mild", "moderate", "severe")[int(rng.integers(3))]),
                    ) if tb else ()
            rows.append((reqs, "pa", f"shenzhen:{i}", np.array([int(tb)])))
    else:
        kinds = list(COVID_MIX)
        for i in range(n):
            kind = kinds[int(rng.choice(len(kinds), p=list(COVID_MIX.values())))]
            if name == "covid_t2":
                while kind not in ("covid", "viral", "bacterial"):
                    kind = kinds[int(rng.choice(len(kinds), p=list(COVID_MIX.values())))]
            sev = ("mild", "moderate", "severe")[int(rng.integers(3))]
            finding = {"covid": "ground_glass_covid", "viral": "viral_pneumonia", "bacterial": "pneumonia",
                       "other": "infiltration"}[kind]
            side = "bilateral" if kind in ("covid", "viral") else None
            reqs = (FindingRequest(finding, side, None, sev),)
            label = int(kind == "covid") if name == "covid_t1" else int(kind in ("covid", "viral"))
            rows.append((reqs, "frontal", f"{name}:{i}", np.array([label])))
    items = []
    for i, (reqs, view, group, _) in enumerate(rows):
        s = int(rng.integers(2**31 - 1))
        items.append(ImageItem(f"{name}_{i:06d}", base + i // shard_size, view, s, reqs, info.acquisition, s + 1))
    labels = np.stack([r[3] for r in rows]).astype(int) if rows else np.zeros((0, len(info.classes)), int)
    return TargetPlan(info, items, labels, [r[2] for r in rows])


def class_findings(name: str) -> dict[str, tuple[str, ...]]:
    """Target domain class -> the findings that render it (the positive class of binary tasks)."""
    if name == "nih":
        return {c: (f,) for c, f in NIH_FINDINGS.items()}
    if name == "vindr":
        return {c: (f,) for c, f in VINDR_FINDINGS.items()}
    if name == "shenzhen":
        return {"Tuberculosis": ("tuberculosis",)}
    if name == "covid_t1":
        return {"COVID-19": ("ground_glass_covid",)}
    if name == "covid_t2":
        return {"Viral": ("ground_glass_covid", "viral_pneumonia")}
    raise ValueError(f"unknown target domain {name!r}; known: {sorted(TARGET_DOMAINS)}")
