"""The source domain for pre-training: every real IU X-ray study, its views rendered from the CT.

For each IU study with at least one image and a report of at least 3 tokens (3,826 studies,
7,470 images), each of the study's own images becomes one synthetic radiograph of the same view
(frontal -> PA, lateral -> left lateral; the 'unknown' views, 42 images, are rendered frontal).
The study's MeSH tags (written by IU annotators from the report) choose the findings, with their
side, zone and severity (:func:`mesh_to_requests`); 'normal' studies render normal anatomy.  The
text stays the real report.  Tags with no 3D model (e.g. ``Lung/hypoinflation``, ``Scoliosis``,
``Fractures, Bone``) are listed per study in ``unrendered``.

Patients: studies are taken in a fixed order and assigned to a pool of deformed patients so that
each patient covers about one cache shard (see :func:`plan_source_items`); a study's views share
the patient and the 3D lesions, so frontal and lateral agree.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..reports.records import StudyRecord
from ..reports.structured_labels import parse_mesh
from .render import FindingRequest, ImageItem

__all__ = ["MESH_FINDINGS", "SourceStudy", "mesh_to_requests", "plan_source_items", "render_image_id"]

# MeSH head (lower case) -> finding; a tuple (finding, required qualifier) entries are conditional.
MESH_FINDINGS: dict[str, str] = {
    "cardiomegaly": "cardiomegaly",
    "pleural effusion": "pleural_effusion",
    "pneumothorax": "pneumothorax",
    "opacity": "lung_opacity",
    "density": "lung_opacity",
    "airspace disease": "consolidation",
    "consolidation": "consolidation",
    "pneumonia": "pneumonia",
    "infiltrate": "infiltration",
    "pulmonary atelectasis": "atelectasis",
    "atelectasis": "atelectasis",
    "volume loss": "atelectasis",
    "calcified granuloma": "calcified_granuloma",
    "granuloma": "calcified_granuloma",
    "granulomatous disease": "calcified_granuloma",
    "nodule": "nodule",
    "mass": "mass",
    "pulmonary congestion": "edema",
    "pulmonary edema": "edema",
    "heart failure": "edema",
    "emphysema": "emphysema",
    "pulmonary emphysema": "emphysema",
    "pulmonary disease, chronic obstructive": "emphysema",
    "lung, hyperlucent": "emphysema",
    "cicatrix": "fibrosis",
    "pulmonary fibrosis": "fibrosis",
    "lung diseases, interstitial": "fibrosis",
    "hernia, hiatal": "hiatal_hernia",
    "catheters, indwelling": "catheter",
    "tube, inserted": "catheter",
    "implanted medical device": "catheter",
    "medical device": "catheter",
    "osteophyte": "degenerative_spine",
    "spondylosis": "degenerative_spine",
    "atherosclerosis": "calcification",
    "aorta, thoracic": "aortic_enlargement",
}
# head -> (qualifier words that must appear, finding)
MESH_CONDITIONAL: dict[str, tuple[tuple[str, ...], str]] = {
    "cardiac shadow": (("enlarged",), "cardiomegaly"),
    "thickening": (("pleura",), "pleural_thickening"),
    "costophrenic angle": (("blunted",), "pleural_effusion"),
    "aorta": (("tortuous", "ectatic", "enlarged", "dilatation"), "aortic_enlargement"),
    "thoracic vertebrae": (("degenerative",), "degenerative_spine"),
    "spine": (("degenerative",), "degenerative_spine"),
    "calcinosis": (("lung",), "calcified_granuloma"),
    "lung": (("hyperdistention",), "emphysema"),
}
ZONE_MAP = {"base": "lower", "lower lobe": "lower", "costophrenic angle": "lower", "retrocardiac": "lower",
            "cardiophrenic angle": "lower", "pleural sinus": "lower", "apex": "upper", "upper lobe": "upper",
            "paratracheal": "upper", "azygos lobe": "upper", "supracardiac": "upper", "middle lobe": "middle",
            "lingula": "middle", "hilum": "middle", "sulcus": "lower", "multilobar": "diffuse"}
ZONE_SIDE = {"lingula": "left", "middle lobe": "right"}
SEVERITY_MAP = {"mild": "mild", "small": "mild", "minimal": "mild", "trace": "mild", "borderline": "mild",
                "moderate": "moderate", "severe": "severe", "large": "severe", "marked": "severe"}


def _finding_for(tag) -> str | None:
    head = tag.finding.lower()
    quals = set(tag.qualifiers) | {q for q in (tag.side, tag.zone, tag.severity) if q}
    if head == "calcinosis" and not ({"lung"} & quals):
        return "calcification"
    if head in MESH_CONDITIONAL:
        words, finding = MESH_CONDITIONAL[head]
        return finding if any(w in q for q in quals for w in words) else None
    if head in ("emphysema", "pulmonary emphysema") and any("subcutaneous" in q for q in quals):
        return None  # air in the soft tissues, not the lung
    return MESH_FINDINGS.get(head)


def mesh_to_requests(mesh: Sequence[str], rng: np.random.Generator, available: Iterable[str] | None = None
                     ) -> tuple[tuple[FindingRequest, ...], tuple[str, ...]]:
    """(finding requests, tags not rendered) for one study's MeSH tags.

    Side, zone and severity come from the tag's qualifiers (:data:`ZONE_MAP`, :data:`SEVERITY_MAP`;
    lingula implies left, middle lobe right); an unspecified severity is mild or moderate at random
    (from ``rng``); a side or zone the finding does not model is left to the finding.  One request
    per (finding, side, zone).  ``available``: the registered findings (default: all).
    """
    from .findings import FINDINGS

    known = set(FINDINGS if available is None else available)
    reqs: dict[tuple, FindingRequest] = {}
    unrendered = []
    for raw in mesh:
        tag = parse_mesh(raw)
        if tag.finding.lower() in ("normal", "no indexing", ""):
            continue
        finding = _finding_for(tag)
        if finding is None or finding not in known:
            unrendered.append(raw)
            continue
        spec = FINDINGS.get(finding)
        side = tag.side or ZONE_SIDE.get(tag.zone or "")
        zone = ZONE_MAP.get(tag.zone or "")
        severity = SEVERITY_MAP.get(tag.severity or "") or ("mild" if rng.random() < 0.5 else "moderate")
        if spec is not None:
            side = side if side in spec.sides else None
            zone = zone if zone in spec.zones else None
        key = (finding, side, zone)
        if key not in reqs:
            reqs[key] = FindingRequest(finding, side, zone, severity)
    return tuple(reqs.values()), tuple(unrendered)


@dataclass(frozen=True)
class SourceStudy:
    study_id: str
    patient: int
    image_ids: tuple[str, ...]
    views: tuple[str, ...]  # as rendered from: "frontal" | "lateral"
    requests: tuple[FindingRequest, ...]
    unrendered: tuple[str, ...]
    text: str
    renders: int = 1  # renders of the study; render k > 0 has the image ids render_image_id(id, k)


def render_image_id(image_id: str, render: int) -> str:
    """The cache id of ``image_id`` in a study's ``render``-th rendering (render 0: the id itself)."""
    if render < 0:
        raise ValueError(f"render must be >= 0, got {render}")
    return image_id if render == 0 else f"{image_id}@r{render}"


def plan_source_items(records: Sequence[StudyRecord], texts: Sequence[str], *, seed: int = 0,
                      shard_size: int = 256, patient_base: int = 1000, renders: int = 1
                      ) -> tuple[list[ImageItem], list[SourceStudy]]:
    """Image items (in cache order) and studies for ``records`` (each with >= 1 image).

    Studies are sorted by id; patient ``p`` (seed ``patient_base + p``) takes the studies whose first
    image falls in items ``[p * shard_size, (p + 1) * shard_size)``, so a cache shard needs at most two
    patients.  Everything depends only on the records, ``seed``, ``shard_size`` and ``renders``.

    ``renders`` > 1 renders every study that many times, so that one report is paired with several films:
    render ``k`` > 0 of all studies follows render ``k - 1`` in the cache, on patients of its own (the
    numbering continues), with its own lesion seed (an unspecified severity is drawn again) and acquisition.
    Render 0 is the same whatever ``renders`` is.
    """
    if len(records) != len(texts):
        raise ValueError(f"need one text per record, got {len(records)} records and {len(texts)} texts")
    if int(renders) != renders or renders < 1:
        raise ValueError(f"renders must be a whole number >= 1, got {renders!r}")
    order = sorted(range(len(records)), key=lambda i: _study_key(records[i].study_id))
    items: list[ImageItem] = []
    studies: list[SourceStudy] = []
    for render in range(int(renders)):
        for i in order:
            rec = records[i]
            if not rec.images:
                raise ValueError(f"study {rec.study_id} has no images: the source domain renders a study's own views")
            patient = patient_base + len(items) // shard_size
            key = [seed, _study_key(rec.study_id)[0], 17] + ([render] if render else [])  # render 0: as before
            study_seed = int(np.random.default_rng(key).integers(2**31 - 1))
            reqs, unrendered = mesh_to_requests(rec.mesh, np.random.default_rng(study_seed))
            views = tuple("lateral" if im.view == "lateral" else "frontal" for im in rec.images)
            for k, (im, view) in enumerate(zip(rec.images, views)):
                items.append(ImageItem(render_image_id(im.image_id, render), patient, view, study_seed, reqs, "iu",
                                       study_seed + 1 + k))
            if render == 0:
                studies.append(SourceStudy(rec.study_id, patient, tuple(im.image_id for im in rec.images), views,
                                           reqs, unrendered, texts[i], int(renders)))
    return items, studies


def _study_key(study_id: str) -> tuple[int, str]:
    """Sort key and seed: the id's digits as a number (IU ids are numbers), else a stable hash."""
    digits = "".join(ch for ch in study_id if ch.isdigit())
    return (int(digits[-15:]) if digits else zlib.crc32(study_id.encode()) + 10**15, study_id)
