"""Radiograph synthesis: a patient, its lesions and an acquisition style -> a uint8 film with boxes.

For each patient (:mod:`refers_lite.data.synthesis.anatomy`) and view, the line integrals of the anatomy are
rendered once (:class:`PatientRenderer` caches them); each radiograph adds the projections of its
lesions (exact: line integrals are linear in attenuation), then applies the acquisition:

1. in-plane detector rotation and shift (``rotation_deg``, ``shift_px``), boxes transformed alike;
2. Beer-Lambert exposure, detector blur, quantum noise, log and percentile window, gamma
   (:func:`refers_lite.data.synthesis.drr.to_radiograph`);
3. collimation: unexposed borders are clear film (bright), and always cover the cranial and caudal
   edges of the CT volume, which a real film would not show as a cut;
4. uint8.

A finding's box, in each view, is where its own line integrals reach 15 % of their peak
(:func:`refers_lite.data.synthesis.findings.base.box_from_projection`): where the finding changes the image.

An :class:`Acquisition` is a domain's style (ranges); :meth:`Acquisition.sample` draws one
radiograph's concrete settings from a seeded generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .anatomy import Anatomy, Lesion
from .drr import render, to_radiograph, to_uint8
from .findings.base import box_from_projection

__all__ = ["Acquisition", "ACQUISITIONS", "Box", "PatientRenderer", "Radiograph", "flip_radiograph"]


@dataclass(frozen=True)
class Acquisition:
    """A domain's acquisition style; each field a (low, high) range drawn uniformly per radiograph."""

    name: str
    ap_fraction: float = 0.0  # frontal views taken AP (portable) instead of PA
    sid_mm: tuple[float, float] = (1750.0, 1850.0)  # PA source-image distance
    ap_sid_mm: tuple[float, float] = (1000.0, 1200.0)  # portable AP
    detector_mm: tuple[float, float] = (335.0, 365.0)  # field: apices to the domes, chest wall to chest wall
    exposure: tuple[float, float] = (0.9, 1.1)
    gamma: tuple[float, float] = (1.3, 1.55)  # > 1: darker lungs, as on film
    blur_sigma_px: tuple[float, float] = (0.4, 0.9)
    noise_std: tuple[float, float] = (0.004, 0.012)
    window_low: tuple[float, float] = (0.5, 2.0)  # percentiles
    window_high: tuple[float, float] = (96.5, 98.0)  # spine and abdomen saturate, as on film
    rotation_deg: tuple[float, float] = (-2.0, 2.0)
    shift_px: tuple[float, float] = (-6.0, 6.0)
    collimation_px: tuple[float, float] = (0.0, 8.0)  # extra unexposed border on each side
    unsharp: tuple[float, float] = (0.7, 1.1)  # local contrast enhancement of digital processing

    def sample(self, rng: np.random.Generator, view: str) -> dict:
        """Concrete settings for one radiograph of ``view`` ("frontal" | "pa" | "ap" | "lateral")."""
        u = lambda r: float(rng.uniform(*r))  # noqa: E731
        if view == "frontal":
            view = "ap" if rng.random() < self.ap_fraction else "pa"
        if view not in ("pa", "ap", "lateral"):
            raise ValueError(f"view must be 'frontal', 'pa', 'ap' or 'lateral', got {view!r}")
        return dict(view=view, sid_mm=u(self.ap_sid_mm if view == "ap" else self.sid_mm),
                    detector_mm=u(self.detector_mm), exposure=u(self.exposure), gamma=u(self.gamma),
                    blur_sigma_px=u(self.blur_sigma_px),
                    # a lateral is exposed with more mAs (its paths are long): less relative noise
                    noise_std=u(self.noise_std) * (0.4 if view == "lateral" else 1.0),
                    window=(u(self.window_low), u(self.window_high)), rotation_deg=u(self.rotation_deg),
                    shift_px=(u(self.shift_px), u(self.shift_px)),
                    collimation_px=tuple(u(self.collimation_px) for _ in range(4)), unsharp=u(self.unsharp),
                    noise_seed=int(rng.integers(2**31 - 1)))


# Each domain's style differs (a domain shift from the source), as real hospitals' films do.
ACQUISITIONS: dict[str, Acquisition] = {
    "iu": Acquisition("iu"),  # outpatient PA + lateral (Indiana University)
    "nih": Acquisition("nih", ap_fraction=0.4, gamma=(1.4, 1.7), window_high=(97.0, 99.0), unsharp=(0.4, 0.8),
                       blur_sigma_px=(0.8, 1.4), noise_std=(0.006, 0.015), rotation_deg=(-3.0, 3.0)),
    "vindr": Acquisition("vindr", gamma=(1.1, 1.3), window_low=(2.0, 4.0), window_high=(96.0, 98.0),
                         unsharp=(0.9, 1.4), blur_sigma_px=(0.3, 0.6), noise_std=(0.002, 0.006),
                         collimation_px=(4.0, 14.0)),
    "shenzhen": Acquisition("shenzhen", detector_mm=(365.0, 395.0), gamma=(1.6, 1.9), exposure=(0.8, 0.95),
                            window_high=(97.5, 99.5), unsharp=(0.2, 0.5), blur_sigma_px=(1.0, 1.6),
                            collimation_px=(0.0, 4.0)),
    "covid": Acquisition("covid", ap_fraction=0.7, gamma=(1.2, 1.6), exposure=(0.75, 1.0), window_high=(97.0, 99.5),
                         unsharp=(0.3, 0.9), noise_std=(0.01, 0.025), blur_sigma_px=(0.8, 1.5),
                         rotation_deg=(-6.0, 6.0), shift_px=(-12.0, 12.0), collimation_px=(0.0, 20.0)),
}


@dataclass
class Box:
    """A finding's box in one image: pixel columns x0..x1 and rows y0..y1 (x1, y1 exclusive)."""

    label: str
    x0: int
    y0: int
    x1: int
    y1: int
    side: str = ""


@dataclass
class Radiograph:
    image: np.ndarray  # (H, W) uint8, dense = bright
    view: str  # "pa" | "ap" | "lateral"
    boxes: list[Box] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


class PatientRenderer:
    """Renders radiographs of one patient; caches the anatomy's line integrals per geometry."""

    def __init__(self, anatomy: Anatomy, size: int = 256):
        self.anatomy = anatomy
        self.size = int(size)
        self._base: dict[tuple, torch.Tensor] = {}

    def _geometry(self, s: dict) -> dict:
        # The detector's size only sets the pixel pitch, i.e. a zoom about the image centre: renders use
        # REFERENCE_DETECTOR_MM and the zoom is applied in 2D with the rotation.  The source-image
        # distance (magnification) is rounded to 50 mm so a patient needs a few base renders per view.
        return dict(view=s["view"], size=self.size, sid_mm=float(round(s["sid_mm"] / 50.0) * 50.0),
                    detector_mm=REFERENCE_DETECTOR_MM, center_offset_mm=FIELD_CENTER_MM)

    def base(self, geom: dict) -> torch.Tensor:
        key = tuple(sorted(geom.items()))
        if key not in self._base:
            self._base[key] = render(self.anatomy.mu, self.anatomy.spacing_mm, **geom)
        return self._base[key]

    def radiograph(self, lesions: Sequence[Lesion], settings: dict, box_frac: float = 0.15) -> Radiograph:
        """One film of this patient with ``lesions`` under ``settings`` (from :meth:`Acquisition.sample`).

        The source-image distance is rounded to 50 mm so that base renders are shared.
        """
        geom = self._geometry(settings)
        li = self.base(geom).clone()
        boxes = []
        for les in lesions:
            d = les.project(self.anatomy, **geom)
            li += d
            b = box_from_projection(d, frac=box_frac)
            if b is not None:
                boxes.append((les, b))
        zoom = settings["detector_mm"] / REFERENCE_DETECTOR_MM
        theta = _affine(settings["rotation_deg"], settings["shift_px"], self.size, zoom)
        li = _warp(li, theta)
        img = to_radiograph(li, exposure=settings["exposure"], window=tuple(settings["window"]),
                            gamma=settings["gamma"], blur_sigma_px=settings["blur_sigma_px"],
                            noise_std=settings["noise_std"],
                            generator=torch.Generator().manual_seed(int(settings["noise_seed"])),
                            unsharp_amount=settings.get("unsharp", 0.0), unsharp_sigma_px=8.0 * self.size / 256)
        img = self._collimate(img, settings["sid_mm"], settings["detector_mm"], settings["collimation_px"],
                              geom["view"])
        out_boxes = []
        for les, b in boxes:
            tb = _transform_box(b, settings["rotation_deg"], settings["shift_px"], self.size, zoom)
            if tb is not None:
                out_boxes.append(Box(les.finding, *tb, side=les.side))
        return Radiograph(to_uint8(img).numpy(), geom["view"], out_boxes, dict(settings))

    def _collimate(self, img: torch.Tensor, sid_mm: float, detector_mm: float, extra: Sequence[float],
                   view: str) -> torch.Tensor:
        """Clear-film borders: top/bottom at least past the projected ends of the CT volume."""
        H = W = self.size
        ext_z = self.anatomy.shape[2] * self.anatomy.spacing_mm[2] / 2
        cz = FIELD_CENTER_MM[2]
        # the volume's cranial / caudal faces project (cone beam) at most at magnification sid / (sid - depth)
        ax = 0 if view == "lateral" else 1
        depth = self.anatomy.shape[ax] * self.anatomy.spacing_mm[ax] / 2
        mag = sid_mm / (sid_mm - 150.0 - depth)
        pitch = detector_mm / H
        top_px = (detector_mm / 2 - (ext_z - cz) * mag) / pitch  # rows above the volume's cranial face
        bottom_px = (detector_mm / 2 - (ext_z + cz) * mag) / pitch
        top = int(math.ceil(max(0.0, top_px) + 3 + extra[0]))
        bottom = int(math.ceil(max(0.0, bottom_px) + 3 + extra[1]))
        left, right = int(round(extra[2])), int(round(extra[3]))
        out = img.clone()
        clear = 0.92
        if top:
            out[:top] = clear
        if bottom:
            out[H - bottom:] = clear
        if left:
            out[:, :left] = clear
        if right:
            out[:, W - right:] = clear
        return out


def _affine(rotation_deg: float, shift_px: Sequence[float], size: int, zoom: float = 1.0) -> torch.Tensor:
    """(1, 2, 3) affine_grid matrix, output -> input: ``input = zoom * R(rotation) output - shift``.

    ``zoom = detector_mm / REFERENCE_DETECTOR_MM``: a larger detector shows more of the patient."""
    a = math.radians(rotation_deg)
    c, s = zoom * math.cos(a), zoom * math.sin(a)
    tx, ty = (2 * shift_px[0] / size, 2 * shift_px[1] / size)
    return torch.tensor([[[c, -s, -tx], [s, c, -ty]]], dtype=torch.float32)


def _warp(li: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    if float((theta - torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]])).abs().max()) < 1e-7:
        return li
    grid = F.affine_grid(theta, [1, 1, *li.shape], align_corners=False)
    return F.grid_sample(li[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]


def _transform_box(b: Sequence[int], rotation_deg: float, shift_px: Sequence[float], size: int,
                   zoom: float = 1.0):
    """The axis-aligned box around a box's rotated and shifted corners, clipped to the image."""
    x0, y0, x1, y1 = b
    a = math.radians(rotation_deg)
    c, s = math.cos(a), math.sin(a)
    ctr = size / 2
    xs, ys = [], []
    for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
        # inverse of the sampling map (input = R output - shift): output = R^-1 (input + shift)
        dx, dy = x - ctr + shift_px[0], y - ctr + shift_px[1]
        xs.append((c * dx + s * dy) / zoom + ctr)
        ys.append((-s * dx + c * dy) / zoom + ctr)
    nx0, ny0 = max(0, int(math.floor(min(xs)))), max(0, int(math.floor(min(ys))))
    nx1, ny1 = min(size, int(math.ceil(max(xs)))), min(size, int(math.ceil(max(ys))))
    if nx1 <= nx0 or ny1 <= ny0:
        return None
    return nx0, ny0, nx1, ny1


REFERENCE_DETECTOR_MM = 350.0  # base renders; each film zooms to its own detector size
# The isocentre sits 10 mm above the middle of the CT box: the field then runs from the top of the
# volume (just above the apices; the CT holds no neck) to below the costophrenic recesses.
FIELD_CENTER_MM = (0.0, 0.0, 10.0)
_SWAP = {"left": "right", "right": "left"}


def flip_radiograph(image: np.ndarray, boxes: Sequence[Box], text: str | None = None):
    """Mirror a film left-right: boxes mirrored and their sides swapped, and the report's left/right
    words swapped (:func:`refers_lite.data.reports.side_swap.swap_sides`) so image and text still agree."""
    from ..reports.side_swap import swap_sides

    if image.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {image.shape}")
    W = image.shape[1]
    flipped = np.ascontiguousarray(image[:, ::-1])
    new_boxes = [Box(b.label, W - b.x1, b.y0, W - b.x0, b.y1, _SWAP.get(b.side, b.side)) for b in boxes]
    return flipped, new_boxes, (swap_sides(text) if text is not None else None)


# ----------------------------------------------------------------------------- batch rendering

@dataclass(frozen=True)
class FindingRequest:
    """A finding to render: name (see ``refers_lite.data.synthesis.findings.FINDINGS``), side, zone, severity
    (None = the finding chooses)."""

    finding: str
    side: str | None = None
    zone: str | None = None
    severity: str = "moderate"


@dataclass(frozen=True)
class ImageItem:
    """One radiograph to synthesise: which patient, which lesions (all views of a study share
    ``lesion_seed`` and ``requests``, hence the same 3D lesions), which view and acquisition."""

    image_id: str
    patient: int  # seed of :func:`refers_lite.data.synthesis.anatomy.make_patient`
    view: str  # "frontal" | "pa" | "ap" | "lateral"
    lesion_seed: int
    requests: tuple[FindingRequest, ...] = ()
    acquisition: str = "iu"
    acq_seed: int = 0


_MEMO: dict = {"patients": {}, "lesions": {}}


def _patient_renderer(patient: int, size: int) -> PatientRenderer:
    from .anatomy import load_base_anatomy, make_patient

    memo = _MEMO["patients"]
    key = (patient, size)
    if key not in memo:
        if len(memo) >= 2:  # items come sorted by patient: keep the current and the previous one
            memo.pop(next(iter(memo)))
        memo[key] = PatientRenderer(make_patient(load_base_anatomy(), patient), size)
    return memo[key]


def item_lesions(item: ImageItem, anatomy: Anatomy) -> list[Lesion]:
    """The 3D lesions of an item's study (memoised: a study's views share them)."""
    from .findings import make_finding

    key = (item.patient, item.lesion_seed, item.requests)
    memo = _MEMO["lesions"]
    if key not in memo:
        if len(memo) >= 8:
            memo.pop(next(iter(memo)))
        lesions = []
        for k, req in enumerate(item.requests):
            rng = np.random.default_rng([item.lesion_seed, k])
            lesions += make_finding(req.finding, anatomy, rng, side=req.side, zone=req.zone, severity=req.severity)
        memo[key] = lesions
    return memo[key]


def render_item(item: ImageItem, size: int = 256) -> Radiograph:
    """Synthesise one :class:`ImageItem` (deterministic given the item)."""
    if item.acquisition not in ACQUISITIONS:
        raise ValueError(f"item {item.image_id}: unknown acquisition {item.acquisition!r}; known {sorted(ACQUISITIONS)}")
    pr = _patient_renderer(item.patient, size)
    lesions = item_lesions(item, pr.anatomy)
    settings = ACQUISITIONS[item.acquisition].sample(np.random.default_rng([item.acq_seed, 1]), item.view)
    return pr.radiograph(lesions, settings)


def render_item_shard(indices: Sequence[int], items: Sequence[ImageItem], extra: Sequence[dict] | None = None,
                      size: int = 256) -> list[tuple[np.ndarray, dict]]:
    """``render_shard`` for :func:`refers_lite.data.loading.image_cache.build_cache`: (image, metadata) per index.

    Metadata: image_id, view (rendered: pa / ap / lateral), patient, findings (';'-joined rendered
    finding names), boxes (JSON list of [label, x0, y0, x1, y1, side]) plus ``extra[i]``.
    """
    import json

    out = []
    for i in indices:
        item = items[i]
        r = render_item(item, size)
        meta = {"image_id": item.image_id, "view": r.view, "patient": int(item.patient),
                "findings": ";".join(sorted({q.finding for q in item.requests})),
                "boxes": json.dumps([[b.label, b.x0, b.y0, b.x1, b.y1, b.side] for b in r.boxes])}
        if extra is not None:
            meta.update(extra[i])
        out.append((r.image, meta))
    return out
