"""Lung parenchyma findings in 3D: airspace, interstitial, volume and density changes.

All replace attenuation inside the lungs (weighted by lung / lobe occupancy, so the fissures
and the lung's own surface bound them) on a sub-box around the lung, lobe or lesion:

* ``consolidation``: a segment-sized, fluffy-edged airspace filling (water) in the lobe of a
  zone, with air bronchograms (a small branching air tree spared by the filling).
* ``pneumonia``: bacterial lobar pneumonia: dense consolidation of most of one lobe, bounded by
  its fissures, with air bronchograms ("middle" on the left is the lingula).
* ``atelectasis``: plate-like (discoid) bands of airless lung in a zone (mild / moderate), or
  lobar collapse (severe): the zone's lobe shrinks towards the mediastinum and becomes airless
  (a smaller, denser lobe).
* ``edema``: bilateral perihilar "bat-wing" haze fading towards the costal surface, with
  septal (Kerley B) lines at the lateral bases.
* ``infiltration``: patchy, ill-defined partial airspace opacities in a zone.
* ``fibrosis``: a reticular net (thin walls at the zero set of a band-limited random field),
  peripheral and basal predominant.
* ``emphysema``: hyperlucent lungs (lower density, upper-zone predominant, bullae when severe)
  and flattened, lower hemidiaphragms: the tissue under each dome above a lower flat level
  (within the lung's footprint, never under the heart) becomes hyperlucent lung.
* ``ground_glass_covid``: bilateral, peripheral, lower-zone predominant ground glass: aerated
  lung is raised part way towards ground-glass density (~ -350 HU); vessels, already denser,
  are left as they are, so they stay visible.
* ``viral_pneumonia``: bilateral perihilar peribronchial thickening (cuffed streaks radiating
  from the hila) with a faint perihilar haze.
* ``tuberculosis``: apical / posterior upper-lobe consolidation with a thick-walled cavity
  (air), satellite nodules and, when not mild, fibrotic strands towards the hilum.

Bilateral diffuse findings (edema, emphysema, ground glass, viral pneumonia, and bilateral
infiltration / fibrosis) are one lesion on a box over both lungs, with side "bilateral".
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..anatomy import Anatomy, Lesion
from .base import MU_AIR, MU_WATER, FindingSpec, crop_lesion, organ_bbox, organ_crop, pick, severity_scale
from .pleura import (Coarse, SubBox, coarse_costal_distance, disc, lung_extent_mm, lung_side, one_side, organ_box,
                     sigmoid, smooth_noise, tube, zone_weight)
from .resample import linear_weights, separable

__all__ = ["SPECS", "consolidation", "pneumonia", "atelectasis", "edema", "infiltration", "fibrosis", "emphysema",
           "ground_glass_covid", "viral_pneumonia", "tuberculosis"]

_LR = ("left", "right")
_LRB = ("left", "right", "bilateral")
_UML = ("upper", "middle", "lower")
_LOBE = {("left", "upper"): "lung_upper_left", ("left", "middle"): "lung_upper_left",  # lingula
         ("left", "lower"): "lung_lower_left", ("right", "upper"): "lung_upper_right",
         ("right", "middle"): "lung_middle_right", ("right", "lower"): "lung_lower_right"}
MU_AIRLESS = 0.95 * MU_WATER  # consolidated / collapsed lung


# ----------------------------------------------------------------------------- helpers
def _sgn(side: str) -> float:
    return 1.0 if side == "left" else -1.0  # + x is lateral for the left lung


def hilum_mm(anatomy: Anatomy, side: str) -> tuple[float, float, float]:
    """Approximate hilum of a lung: near its medial edge, mid-depth, a little above mid-height."""
    e = lung_extent_mm(anatomy, side)
    x_med = e["x0"] if side == "left" else e["x1"]
    w = e["x1"] - e["x0"]
    return (x_med + _sgn(side) * 0.18 * w, e["y0"] + 0.55 * (e["y1"] - e["y0"]), e["z0"] + 0.58 * (e["z1"] - e["z0"]))


def lung_mu_typical(anatomy: Anatomy) -> float:
    """Median attenuation of aerated lung (occupancy > 0.9) of this patient, cached."""
    key = "lungfindings:lung_mu"
    if key not in anatomy._cache:
        box = organ_box(anatomy, ["lung"], pad=0)
        m = organ_crop(anatomy, "lung", box.sl) > 0.9
        anatomy._cache[key] = float(box.mu[m][::7].median())
    return anatomy._cache[key]


def lung_part_mu(mu: torch.Tensor, lung: torch.Tensor, anatomy: Anatomy) -> torch.Tensor:
    """Attenuation of the lung part of each voxel: ``mu`` inside the lung, at most a little above
    typical aerated lung where the voxel is partly chest wall or mediastinum (occupancy < 0.9)."""
    return torch.where(lung > 0.9, mu, mu.clamp(max=1.5 * lung_mu_typical(anatomy)))


def merge(parts: Sequence[tuple[SubBox, torch.Tensor]]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Sum of per-box deltas on the union box: (delta, origin)."""
    lo = [min(b.lo[a] for b, _ in parts) for a in range(3)]
    hi = [max(b.hi[a] for b, _ in parts) for a in range(3)]
    out = torch.zeros([h - l for l, h in zip(lo, hi)])
    for b, d in parts:
        sl = tuple(slice(b.lo[a] - lo[a], b.hi[a] - lo[a]) for a in range(3))
        out[sl] += d
    return out, tuple(lo)  # type: ignore[return-value]


def z_box(anatomy: Anatomy, box: SubBox, z_lo: float | None = None, z_hi: float | None = None) -> SubBox:
    """``box`` cut to the z range [z_lo, z_hi] mm (plus a voxel)."""
    k0 = box.lo[2] if z_lo is None else max(box.lo[2], int(math.floor(anatomy.mm_to_index((0, 0, z_lo))[2])) - 1)
    k1 = box.hi[2] if z_hi is None else min(box.hi[2], int(math.ceil(anatomy.mm_to_index((0, 0, z_hi))[2])) + 2)
    return SubBox(anatomy, (box.lo[0], box.lo[1], k0), (box.hi[0], box.hi[1], max(k1, k0 + 2)))


def ball_box(anatomy: Anatomy, c: Sequence[float], r: float) -> SubBox:
    lo = anatomy.mm_to_index([v - r for v in c])
    hi = anatomy.mm_to_index([v + r for v in c])
    return SubBox(anatomy, [int(math.floor(v)) for v in lo], [int(math.ceil(v)) + 1 for v in hi])


def lobe_occupancy(anatomy: Anatomy, side: str, zone: str, pad: int = 3) -> tuple[str, SubBox, torch.Tensor]:
    """The lobe of (side, zone) on its sub-box; the lingula (left "middle") is the lower part of
    the left upper lobe."""
    name = _LOBE[(side, zone)]
    box = organ_box(anatomy, [name], pad=pad)
    if (side, zone) == ("left", "middle"):
        (_, _), (_, _), (k0, k1) = organ_bbox(anatomy, name, 0.05)
        z0, z1 = anatomy.index_to_mm((0, 0, k0))[2], anatomy.index_to_mm((0, 0, k1 - 1))[2]
        cut = z0 + 0.42 * (z1 - z0)
        box = z_box(anatomy, box, None, cut + 15.0)
        _, y, z = box.grid()
        return name, box, box.organ(name) * sigmoid((cut - z) / 5.0)
    return name, box, box.organ(name)


def candidates(weight: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """Flat (C-order) indices where ``weight >= threshold``, else where it is maximal (for :func:`random_points`)."""
    w = weight.numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight)
    cand = np.flatnonzero(w >= threshold)  # the order of torch.nonzero, which is ~10x slower
    if cand.size == 0:
        cand = np.flatnonzero(w >= float(w.max()) * 0.999)
    return cand


def random_points(rng: np.random.Generator, box, weight: torch.Tensor | None, threshold: float = 0.5, n: int = 1,
                  cand: np.ndarray | None = None):
    """``n`` random voxel centres (mm) of ``box`` (a SubBox or Coarse grid) where ``weight >= threshold``
    (else where it is maximal); ``cand``: precomputed :func:`candidates` (then ``weight`` is not used)."""
    if cand is None:
        cand = candidates(weight, threshold)
    pick_ = rng.integers(cand.size, size=n)
    idx = np.unravel_index(cand[pick_], tuple(weight.shape) if weight is not None else box.shape)
    return [tuple(float(box.axes[a][int(idx[a][i])]) for a in range(3)) for i in range(n)]


def random_point(rng: np.random.Generator, box, weight: torch.Tensor | None, threshold: float = 0.5,
                 cand: np.ndarray | None = None):
    """One random voxel centre (mm) of ``box`` where ``weight >= threshold`` (see :func:`random_points`)."""
    return random_points(rng, box, weight, threshold, 1, cand=cand)[0]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-9)


def branching_tree(rng: np.random.Generator, root: Sequence[float], direction: Sequence[float], length: float,
                   radius: float, generations: int = 4, spread_deg: tuple[float, float] = (20.0, 38.0)):
    """Segments ``(p0, p1, r0, r1)`` of a dichotomous tree (airways, bronchovascular bundles)."""
    segs = []
    stack = [(np.asarray(root, float), _unit(direction), float(length), float(radius), 0)]
    while stack:
        p, d, L, r, g = stack.pop()
        d = _unit(d + 0.15 * rng.standard_normal(3))
        q = p + d * L
        segs.append((tuple(p), tuple(q), r, 0.8 * r))
        if g < generations - 1:
            e = rng.standard_normal(3)  # (the cross product d x e, written out: np.cross is slow on 3-vectors)
            perp = _unit(np.array([d[1] * e[2] - d[2] * e[1], d[2] * e[0] - d[0] * e[2], d[0] * e[1] - d[1] * e[0]]))
            for s in (1.0, -1.0):
                a = math.radians(float(rng.uniform(*spread_deg)))
                stack.append((q, d * math.cos(a) + s * perp * math.sin(a), L * 0.78, r * 0.75, g + 1))
    return segs


# ----------------------------------------------------------------------------- consolidation / pneumonia
def _airspace(anatomy: Anatomy, rng: np.random.Generator, side: str, zone: str, severity: str, lobar: bool):
    pre = _lobe_anatomy(anatomy, side, zone)
    name, box, lobe = pre["name"], pre["box"], pre["lobe"]
    x, y, z = box.grid()
    sp = anatomy.spacing_mm
    if lobar:  # most of the lobe, filled from a random seed region outwards
        frac = severity_scale(severity, 0.45, 0.75, 0.97)
        field = smooth_noise(rng, box.shape, 35.0, sp) + 0.35 * smooth_noise(rng, box.shape, 9.0, sp)
        vals = field[pre["inside"]]
        thr = float(torch.quantile(vals[:: max(1, vals.numel() // 100000)], 1.0 - frac)) if frac < 0.999 else -1e9
        fill = sigmoid((field - thr) / 0.12) * 0.97
    else:  # a segment: a wedge from the hilum to the pleura, with fluffy, lobulated edges
        half = math.radians(severity_scale(severity, 17.0, 24.0, 33.0) * float(rng.uniform(0.9, 1.1)))
        hil = np.asarray(hilum_mm(anatomy, side))
        tgt = np.asarray(random_point(rng, box, None, cand=pre["targets"]))
        axis = _unit(tgt - hil)
        r = pre["r_hilum"]
        cos = (x - float(hil[0])) * float(axis[0]) + (y - float(hil[1])) * float(axis[1])
        cos = cos + (z - float(hil[2])) * float(axis[2])
        ang = torch.acos(cos.div_(r).clamp_(-1, 1))
        edge = (half * (1.0 + 0.25 * smooth_noise(rng, box.shape, 16.0, sp))
                + 0.1 * smooth_noise(rng, box.shape, 5.0, sp))
        near = float(np.linalg.norm(tgt - hil)) * float(rng.uniform(0.25, 0.45))  # spares the central lobe
        fill = 0.96 * sigmoid((edge - ang) / 0.04) * sigmoid((r - near) / 4.0)
    fill = fill * (1.0 + 0.06 * smooth_noise(rng, box.shape, 6.0, sp)).clamp(0, 1)
    # air bronchograms: a branching air tree from the lobe's hilar end into the filled region
    air = torch.zeros(box.shape)
    hil = hilum_mm(anatomy, side)
    w = fill * lobe
    m = float(w.sum())
    if m > 1.0:  # the filling's centroid (sums per axis: no full-size products)
        cen = [float((w.sum(dim=[b for b in range(3) if b != a]) * box.axes[a]).sum()) / m for a in range(3)]
        root = np.asarray(hil) + 0.45 * (np.asarray(cen) - np.asarray(hil))
        span = float(np.linalg.norm(np.asarray(cen) - root))
        for seg in branching_tree(rng, root, np.asarray(cen) - root, max(0.5 * span, 12.0), 3.4, generations=5):
            tube(air, box, seg[0], seg[1], seg[2], seg[3])
    delta = fill.mul_(air.mul_(-0.9).add_(1.0)).mul_(pre["to_airless"])
    return delta, box, name


def _lobe_anatomy(anatomy: Anatomy, side: str, zone: str) -> dict:
    """Airspace filling of the lobe of (side, zone), what does not depend on the draw (once per patient):
    :func:`lobe_occupancy`, where the lobe is >= 0.5, the candidate target voxels of a segment (lobe
    times the zone's window >= 0.9), the distance to the hilum (mm) and lobe * (airless - mu)."""
    key = f"lungfindings:lobe:{side}:{zone}"
    if key in anatomy._cache:
        return anatomy._cache[key]
    name, box, lobe = lobe_occupancy(anatomy, side, zone)
    x, y, z = box.grid()
    hil = np.asarray(hilum_mm(anatomy, side))
    dx, dy, dz = x - float(hil[0]), y - float(hil[1]), z - float(hil[2])
    weight = lobe * (zone_weight(z, lung_extent_mm(anatomy, side), zone) if (side, zone) != ("left", "middle") else 1.0)
    anatomy._cache[key] = {"name": name, "box": box, "lobe": lobe, "inside": lobe >= 0.5,
                           "targets": candidates(weight, 0.9),
                           "r_hilum": torch.sqrt(dx * dx + dy * dy + dz * dz).clamp_min(1e-3),
                           "to_airless": lobe * (MU_AIRLESS - box.mu)}
    return anatomy._cache[key]


def _airspace_finding(name: str, lobar: bool, anatomy: Anatomy, rng: np.random.Generator, side: str | None,
                      zone: str | None, severity: str) -> list[Lesion]:
    side = pick(rng, side, _LR, "side")
    zone = pick(rng, zone, _UML, "zone")
    severity_scale(severity, 0, 0, 0)
    delta, box, lobe = _airspace(anatomy, rng, side, zone, severity, lobar=lobar)
    return [crop_lesion(name, delta, side=side, zone=zone, severity=severity, origin=box.origin, lobe=lobe)]


def consolidation(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
                  severity: str = "moderate") -> list[Lesion]:
    """Segmental airspace consolidation in the lobe of a zone, fluffy margins, air bronchograms."""
    return _airspace_finding("consolidation", False, anatomy, rng, side, zone, severity)


def pneumonia(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
              severity: str = "moderate") -> list[Lesion]:
    """Lobar pneumonia: dense consolidation of one lobe (bounded by its fissures), air bronchograms."""
    return _airspace_finding("pneumonia", True, anatomy, rng, side, zone, severity)


# ----------------------------------------------------------------------------- atelectasis
def _backward_shrink(box: SubBox, vol: torch.Tensor, anchor: Sequence[float], scale: Sequence[float]) -> torch.Tensor:
    """``vol`` (box) shrunk about ``anchor`` (mm) by ``scale`` per axis: out(p) = vol(a + (p - a) / s)
    (trilinear, 0 outside the box).  The source of each axis depends on that axis only: separable."""
    ws = []
    for a, s, ax in zip(anchor, scale, box.axes):
        step = float(ax[1] - ax[0])
        ws.append(linear_weights((a + (ax - a) / s - float(ax[0])) / step, ax.numel(), "zeros"))  # voxel index
    return separable(vol, *ws)


def _plate_anatomy(anatomy: Anatomy, side: str, zone: str) -> tuple[SubBox, np.ndarray, torch.Tensor]:
    """Plate atelectasis in (side, zone), once per patient: the zone's slab of the lung's box, the
    candidate disc centres (lung within the zone's band) and lung * (airless - mu)."""
    key = f"lungfindings:plates:{side}:{zone}"
    if key not in anatomy._cache:
        ext = lung_extent_mm(anatomy, side)
        h = ext["z1"] - ext["z0"]
        lo_f, hi_f = {"lower": (0.14, 0.36), "middle": (0.38, 0.6), "upper": (0.64, 0.82)}[zone]
        box = z_box(anatomy, organ_box(anatomy, [f"lung_{side}"], pad=2), ext["z0"] + (lo_f - 0.12) * h,
                    ext["z0"] + (hi_f + 0.12) * h)
        lung = box.organ(f"lung_{side}")
        _, _, z = box.grid()
        hgt = (z - ext["z0"]) / h
        cand = lung * sigmoid((hgt - lo_f) / 0.02) * sigmoid((hi_f - hgt) / 0.02)
        anatomy._cache[key] = (box, candidates(cand, 0.9), lung * (MU_AIRLESS - box.mu))
    return anatomy._cache[key]


def _collapse_anatomy(anatomy: Anatomy, side: str, zone: str):
    """Lobar collapse in (side, zone), once per patient: :func:`lobe_occupancy` (pad 4) and the lobe's
    medial x, mean y and z, posterior y, top and bottom z (mm) (occupancy >= 0.5)."""
    key = f"lungfindings:collapse:{side}:{zone}"
    if key not in anatomy._cache:
        name, box, lobe = lobe_occupancy(anatomy, side, zone, pad=4)
        idx = torch.nonzero(lobe >= 0.5)
        pts = [box.axes[a][idx[:, a]] for a in range(3)]
        x_med = float(pts[0].min()) if side == "left" else float(pts[0].max())
        yc, zc = float(pts[1].mean()), float(pts[2].mean())
        y_post, z_top, z_bot = float(pts[1].min()), float(pts[2].max()), float(pts[2].min())
        anatomy._cache[key] = (name, box, lobe, (x_med, yc, zc, y_post, z_top, z_bot))
    return anatomy._cache[key]


def atelectasis(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
                severity: str = "moderate") -> list[Lesion]:
    """Plate-like (discoid) bands in a zone (mild: one thin band, moderate: 2-3 thicker ones), or
    lobar collapse (severe): the zone's lobe shrinks towards the mediastinum and becomes airless
    (upper lobes towards the apex, lower lobes towards the spine and diaphragm, the middle lobe /
    lingula towards the heart border)."""
    side = pick(rng, side, _LR, "side")
    zone = pick(rng, zone, _UML, "zone")
    severity_scale(severity, 0, 0, 0)
    sp = anatomy.spacing_mm
    ext = lung_extent_mm(anatomy, side)
    if severity != "severe":
        box, cand, to_airless = _plate_anatomy(anatomy, side, zone)
        plates = torch.zeros(box.shape)
        n = 1 if severity == "mild" else int(rng.integers(2, 4))
        thick = severity_scale(severity, 3.5, 5.5, 5.5)
        lateral = ext["x1"] if side == "left" else ext["x0"]
        for c in random_points(rng, box, None, n=n, cand=cand):
            radius = float(rng.uniform(22.0, 32.0) if severity == "mild" else rng.uniform(28.0, 42.0))
            c = list(c)  # move the disc towards the lateral pleura, which plate atelectasis usually reaches
            c[0] = c[0] + 0.5 * (lateral - _sgn(side) * 0.6 * radius - c[0])
            tilt = rng.normal(0, 0.18, size=2)
            disc(plates, box, c, (tilt[0], tilt[1], 1.0), radius, thick * float(rng.uniform(0.8, 1.2)), edge_mm=4.0)
        plates = plates * (1.0 + 0.2 * smooth_noise(rng, box.shape, 10.0, sp)).clamp(0, 1)
        delta = plates.mul_(to_airless)
        kind = "plate"
    else:
        _, box, lobe, (x_med, yc, zc, y_post, z_top, z_bot) = _collapse_anatomy(anatomy, side, zone)
        s = 0.55 * float(rng.uniform(0.93, 1.07))
        anchor, scale = {
            "upper": ((x_med, yc, z_top), (s, s, 0.5 + 0.5 * s)),
            "lower": ((x_med, y_post + 10.0, z_bot), (s, s, 0.5 + 0.5 * s)),
            "middle": ((x_med, yc, zc), (0.5 + 0.5 * s, s, s)),
        }[zone]
        collapsed = _backward_shrink(box, lobe, anchor, scale)
        lung = box.organ(f"lung_{side}")
        delta = collapsed.clamp(0, 1) * lung * (MU_AIRLESS - box.mu)
        kind = "lobar"
    return [crop_lesion("atelectasis", delta, side=side, zone=zone, severity=severity, origin=box.origin, kind=kind)]


# ----------------------------------------------------------------------------- edema
def _edema_anatomy(anatomy: Anatomy, s: str) -> tuple[torch.Tensor, np.ndarray]:
    """Edema of lung ``s``, what does not depend on the draw (once per patient), on the lung's coarse
    grid: the haze's weight (central, fading towards the costal surface, and perihilar) and the
    candidate centres of the Kerley B lines (lateral bases, near the costal surface)."""
    key = f"lungfindings:edema:{s}"
    if key in anatomy._cache:
        return anatomy._cache[key]
    ext = lung_extent_mm(anatomy, s)
    hx, hy, hz = hilum_mm(anatomy, s)
    w_ = ext["x1"] - ext["x0"]
    h_ = ext["z1"] - ext["z0"]
    # the haze is smooth: computed on a 2x coarser grid
    cg, lung_c, d = coarse_costal_distance(anatomy, s, lung_side(anatomy, s)["box"])
    x, y, z = cg.grid()
    central = (d / 30.0).clamp(0, 1) ** 1.3
    perihilar = torch.exp(-0.5 * (((x - hx) / (0.5 * w_)) ** 2 + ((z - hz) / (0.42 * h_)) ** 2
                                  + ((y - hy) / 70.0) ** 2))
    hgt = (z - ext["z0"]) / h_
    cand = lung_c * sigmoid((hgt - 0.12) / 0.03) * sigmoid((0.38 - hgt) / 0.03) * (d < 8.0) * (
        sigmoid((_sgn(s) * (x - hx) - 0.55 * w_) / 4.0))
    anatomy._cache[key] = (central * perihilar, candidates(cand, 0.5))
    return anatomy._cache[key]


def edema(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
          severity: str = "moderate") -> list[Lesion]:
    """Bilateral perihilar haze fading to the periphery, with Kerley B lines at the lateral bases."""
    side = pick(rng, side, ("bilateral",), "side")
    zone = pick(rng, zone, ("diffuse",), "zone")
    amp = severity_scale(severity, 0.15, 0.35, 0.75)
    n_lines = severity_scale(severity, 6, 9, 10)
    parts = []
    for s in ("left", "right"):
        side_ = lung_side(anatomy, s)
        box, cg = side_["box"], side_["coarse"]
        base, cand = _edema_anatomy(anatomy, s)
        w = base * (1.0 + 0.3 * smooth_noise(rng, cg.shape, 14.0, cg.spacing_mm))
        fill = cg.up((amp * w).clamp(0, 0.85))
        # Kerley B: short horizontal septal sheets meeting the lateral pleura at the bases
        for c in random_points(rng, cg, None, n=int(n_lines), cand=cand):
            disc(fill, box, c, (0.0, 0.0, 1.0), float(rng.uniform(8.0, 14.0)), 2.0, value=0.9, edge_mm=1.5)
        parts.append((box, fill.mul_(side_["to_water"])))
    delta, origin = merge(parts)
    return [crop_lesion("edema", delta, side=side, zone=zone, severity=severity, origin=origin)]


# ----------------------------------------------------------------------------- infiltration
def infiltration(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
                 severity: str = "moderate") -> list[Lesion]:
    """Patchy, ill-defined partial airspace opacities in a zone."""
    side = pick(rng, side, _LRB, "side")
    zone = pick(rng, zone, ("upper", "middle", "lower", "diffuse"), "zone")
    cover = severity_scale(severity, 0.07, 0.14, 0.26)
    dens = severity_scale(severity, 0.6, 0.7, 0.8)
    sp = anatomy.spacing_mm
    parts = []
    for s in one_side(side):
        ext = lung_extent_mm(anatomy, s)
        box = organ_box(anatomy, [f"lung_{s}"], pad=2)
        h = ext["z1"] - ext["z0"]
        if zone != "diffuse":
            lo = {"lower": None, "middle": ext["z0"] + h / 3 - 12, "upper": ext["z0"] + 2 * h / 3 - 12}[zone]
            hi = {"lower": ext["z0"] + h / 3 + 12, "middle": ext["z0"] + 2 * h / 3 + 12, "upper": None}[zone]
            box = z_box(anatomy, box, lo, hi)
        lung = box.organ(f"lung_{s}")
        _, _, z = box.grid()
        region = lung * zone_weight(z, ext, zone)
        field = smooth_noise(rng, box.shape, 13.0, sp) + 0.8 * smooth_noise(rng, box.shape, 40.0, sp)
        vals = field[region >= 0.5]
        if vals.numel() == 0:
            raise ValueError(f"no {s} lung in the {zone} zone")
        thr = float(torch.quantile(vals[:: max(1, vals.numel() // 100000)], 1.0 - cover))
        fill = dens * sigmoid((field - thr) / 0.3) * region
        parts.append((box, fill * (MU_WATER - box.mu)))
    delta, origin = merge(parts)
    return [crop_lesion("infiltration", delta, side=side, zone=zone, severity=severity, origin=origin)]


# ----------------------------------------------------------------------------- fibrosis
def fibrosis(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
             severity: str = "moderate") -> list[Lesion]:
    """Reticular (net-like) opacities, subpleural and basal predominant."""
    side = pick(rng, side, _LRB, "side")
    zone = pick(rng, zone, ("lower", "diffuse"), "zone")
    reach = severity_scale(severity, 14.0, 22.0, 32.0)  # how deep from the costal pleura (mm)
    dens = severity_scale(severity, 0.6, 0.75, 0.9)
    sp = anatomy.spacing_mm
    parts = []
    for s in one_side(side):
        ext = lung_extent_mm(anatomy, s)
        h = ext["z1"] - ext["z0"]
        box = organ_box(anatomy, [f"lung_{s}"], pad=2)
        if zone == "lower":
            box = z_box(anatomy, box, None, ext["z0"] + 0.75 * h)
        lung = box.organ(f"lung_{s}")
        cg, _, d = coarse_costal_distance(anatomy, s, box)
        _, _, z = cg.grid()
        hgt = ((z - ext["z0"]) / h).clamp(0, 1)
        basal = sigmoid((0.5 - hgt) / 0.1) if zone == "lower" else 0.35 + 0.65 * (1 - hgt)
        region = cg.up(torch.exp(-d / reach) * basal) * lung
        # walls: the zero sets of two band-limited fields (a sponge of thin sheets, ~5-8 mm cells)
        f1 = smooth_noise(rng, box.shape, 8.0, sp)
        f2 = smooth_noise(rng, box.shape, 13.0, sp)
        walls = torch.maximum(f1.div_(0.3).square_().neg_().exp_(), f2.div_(0.3).square_().neg_().exp_().mul_(0.8))
        fill = walls.mul_(dens).mul_(region)
        parts.append((box, fill.mul_(MU_WATER - box.mu)))
    delta, origin = merge(parts)
    return [crop_lesion("fibrosis", delta, side=side, zone=zone, severity=severity, origin=origin)]


# ----------------------------------------------------------------------------- emphysema
def _emphysema_anatomy(anatomy: Anatomy, s: str) -> dict:
    """What emphysema needs of one lung that does not depend on the draw, once per patient: the lung's
    box and coarse grid, lung occupancy times the lung part of mu, the bullae's candidate voxels
    (upper zone), and for the flattened hemidiaphragm its dome level and, on the slab of the box
    up to the domes, the tissue that may become lung (below the lung, within the lung's footprint,
    never under the heart, not heart / vessels / spine / ribs) and 1 - lung (None: no dome)."""
    key = f"lungfindings:emphysema:{s}"
    if key in anatomy._cache:
        return anatomy._cache[key]
    from scipy.ndimage import binary_dilation

    ext = lung_extent_mm(anatomy, s)
    h = ext["z1"] - ext["z0"]
    box = organ_box(anatomy, [f"lung_{s}"], pad=2)
    lung = box.organ(f"lung_{s}")
    mu = box.mu
    _, _, z = box.grid()
    hgt = ((z - ext["z0"]) / h).clamp(0, 1)
    out = {"box": box, "lung": lung, "mu": mu, "coarse": Coarse(box), "lung_mu": lung * lung_part_mu(mu, lung, anatomy),
           "bullae": candidates(lung * sigmoid((hgt - 0.62) / 0.03), 0.95), "dia": None}
    m = (lung >= 0.5).numpy()
    heart = (box.organ("heart") >= 0.2).numpy()
    above_lung = np.flip(np.maximum.accumulate(np.flip(m, 2), 2), 2)  # lung somewhere above, same column
    above_heart = np.flip(np.maximum.accumulate(np.flip(heart, 2), 2), 2)
    has = m.any(2)
    bottom = np.where(has, np.argmax(m, axis=2), 0)  # lowest lung voxel per column
    zb = box.axes[2].numpy()[bottom]
    near_heart = binary_dilation(above_heart.any(2), iterations=5)  # ~1 cm around the heart's columns
    cols = has & ~near_heart & (zb < ext["z0"] + 0.45 * h)  # columns whose lung ends on the diaphragm
    if cols.any():
        dome = float(np.quantile(zb[cols], 0.97))
        region = above_lung & ~m & ~above_heart & cols[:, :, None] & (box.axes[2].numpy() <= dome + 3.0)[None, None]
        # the slab of the box up to the region's top (+ 1 voxel, so the lesion's crop is unchanged)
        top = int(np.flatnonzero(region.any((0, 1)))[-1]) + 2 if region.any() else 1
        slab = SubBox(anatomy, box.lo, (box.hi[0], box.hi[1], min(box.hi[2], box.lo[2] + top)))
        k = slab.shape[2]
        keep = (slab.organ("heart") + slab.organ("aorta") + slab.organ("esophagus") + slab.organ("spine")
                + slab.organ("ribs")).clamp(0, 1)
        out["dia"] = (slab, dome, torch.from_numpy(region[:, :, :k].astype(np.float32)) * (1.0 - keep),
                      1.0 - lung[:, :, :k])
    anatomy._cache[key] = out
    return out


def emphysema(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
              severity: str = "moderate") -> list[Lesion]:
    """Hyperlucent lungs (upper-zone predominant, bullae unless mild) and flat, low hemidiaphragms.

    Two lesions: the lungs (``attrs["part"] == "hyperlucent lungs"``) and the domes
    (``"flattened diaphragm"``), so each gets its own box."""
    side = pick(rng, side, ("bilateral",), "side")
    zone = pick(rng, zone, ("diffuse",), "zone")
    loss = severity_scale(severity, 0.22, 0.36, 0.5)  # fraction of lung density lost
    drop = severity_scale(severity, 10.0, 20.0, 30.0)  # how far the domes come down (mm)
    parts, dia = [], []
    for s in ("left", "right"):
        ext = lung_extent_mm(anatomy, s)
        h = ext["z1"] - ext["z0"]
        pre = _emphysema_anatomy(anatomy, s)
        box, lung, mu, cg = pre["box"], pre["lung"], pre["mu"], pre["coarse"]
        _, _, zc = cg.grid()
        r = loss * (0.75 + 0.5 * ((zc - ext["z0"]) / h).clamp(0, 1)) * (
            1.0 + 0.25 * smooth_noise(rng, cg.shape, 20.0, cg.spacing_mm))
        delta = -cg.up(r.clamp(0, 0.85)) * pre["lung_mu"]
        if severity != "mild":  # bullae: thin-walled air spaces in the upper zone
            nb = int(rng.integers(1, 3 if severity == "moderate" else 4))
            for c in random_points(rng, box, None, n=nb, cand=pre["bullae"]):
                rb = float(rng.uniform(9.0, 16.0 if severity == "moderate" else 24.0))
                bb = ball_box(anatomy, c, rb + 5.0)
                lo = [max(p, q) for p, q in zip(bb.lo, box.lo)]
                hi = [min(p, q) for p, q in zip(bb.hi, box.hi)]
                sl = tuple(slice(l - o, u - o) for l, u, o in zip(lo, hi, box.lo))
                sb = SubBox(anatomy, lo, hi)
                bx, by, bz = sb.grid()
                rr = torch.sqrt((bx - c[0]) ** 2 + (by - c[1]) ** 2 + (bz - c[2]) ** 2)
                inside = sigmoid((rb - rr) / 1.0)
                wall = torch.exp(-(((rr - rb) / 1.2) ** 2))
                mu_s, d_s, l_s = mu[sl], delta[sl], lung[sl]
                delta[sl] = d_s + l_s * (inside * (MU_AIR - mu_s - d_s)
                                         + 0.4 * wall * (MU_WATER * 0.5 - mu_s) * (1 - inside))
        if pre["dia"] is not None:  # flattened, lower hemidiaphragm (see _emphysema_anatomy)
            slab, dome, region_keep, not_lung = pre["dia"]
            flat = max(dome - drop * float(rng.uniform(0.9, 1.1)), ext["z0"] + 12.0)
            _, _, z = slab.grid()
            w = region_keep * sigmoid((z - flat) / 1.5) * not_lung
            target = lung_mu_typical(anatomy) * (1.0 - loss)
            dia.append((slab, w * (target - slab.mu)))
        parts.append((box, delta))
    delta, origin = merge(parts)
    out = [crop_lesion("emphysema", delta, side=side, zone=zone, severity=severity, origin=origin,
                       part="hyperlucent lungs", density_loss=float(loss))]
    if dia:  # a second lesion (its own box): the flattened, lower domes
        d2, o2 = merge(dia)
        out.append(crop_lesion("emphysema", d2, side=side, zone=zone, severity=severity, origin=o2,
                               part="flattened diaphragm", diaphragm_drop_mm=float(drop)))
    return out


# ----------------------------------------------------------------------------- ground glass (COVID-19)
def _ground_glass_anatomy(anatomy: Anatomy, s: str, zone: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground glass of lung ``s``, once per patient and zone, on the coarse grid: the region
    (peripheral, lower) clipped to [0, 1], and where region times lung exceeds 0.3."""
    key = f"lungfindings:ground_glass:{s}:{zone}"
    if key in anatomy._cache:
        return anatomy._cache[key]
    ext = lung_extent_mm(anatomy, s)
    h = ext["z1"] - ext["z0"]
    cg, lung_c, d = coarse_costal_distance(anatomy, s, lung_side(anatomy, s)["box"], below=False)
    _, _, z = cg.grid()
    hgt = ((z - ext["z0"]) / h).clamp(0, 1)
    lower = sigmoid((0.6 - hgt) / 0.12) if zone == "lower" else 0.45 + 0.55 * sigmoid((0.6 - hgt) / 0.12)
    region = torch.exp(-d / 30.0) * lower
    anatomy._cache[key] = (region.clamp(0, 1), (region * lung_c) > 0.3)
    return anatomy._cache[key]


def ground_glass_covid(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                       zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """Bilateral peripheral, lower-zone predominant, patchy ground glass (vessels stay visible)."""
    side = pick(rng, side, ("bilateral",), "side")
    zone = pick(rng, zone, ("lower", "diffuse"), "zone")
    mu_gg = severity_scale(severity, 0.011, 0.0145, 0.018)
    cover = severity_scale(severity, 0.35, 0.5, 0.7)
    parts = []
    for s in ("left", "right"):
        side_ = lung_side(anatomy, s)
        box, lung, cg = side_["box"], side_["lung"], side_["coarse"]  # everything here is smooth: a 2x coarser grid
        region, sel = _ground_glass_anatomy(anatomy, s, zone)
        field = smooth_noise(rng, cg.shape, 18.0, cg.spacing_mm) + 0.4 * smooth_noise(rng, cg.shape, 8.0, cg.spacing_mm)
        vals = field[sel] if bool(sel.any()) else field.flatten()
        thr = float(torch.quantile(vals[:: max(1, vals.numel() // 100000)], 1.0 - cover))
        fill = cg.up(sigmoid((field - thr) / 0.35) * region)
        key = f"lungfindings:ground_glass:{s}:{mu_gg}"  # lung * (mu_gg - mu), per severity
        if key not in anatomy._cache:
            anatomy._cache[key] = lung * (mu_gg - box.mu).clamp_min(0.0)
        parts.append((box, fill.mul_(anatomy._cache[key])))
    delta, origin = merge(parts)
    return [crop_lesion("ground_glass_covid", delta, side=side, zone=zone, severity=severity, origin=origin)]


# ----------------------------------------------------------------------------- viral pneumonia
def viral_pneumonia(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                    zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """Bilateral perihilar peribronchial thickening: cuffed streaks radiating from the hila."""
    side = pick(rng, side, ("bilateral",), "side")
    zone = pick(rng, zone, ("diffuse",), "zone")
    n = int(severity_scale(severity, 7, 11, 15))
    haze = severity_scale(severity, 0.12, 0.22, 0.32)
    wall_d = severity_scale(severity, 0.7, 0.8, 0.9)
    parts = []
    for s in ("left", "right"):
        ext = lung_extent_mm(anatomy, s)
        side_ = lung_side(anatomy, s)
        box, cg = side_["box"], side_["coarse"]
        hil = np.asarray(hilum_mm(anatomy, s))
        w_ = ext["x1"] - ext["x0"]
        h_ = ext["z1"] - ext["z0"]
        segs = []
        for _ in range(n):
            d = np.array([_sgn(s) * rng.uniform(0.4, 1.0), rng.normal(0, 0.5), rng.normal(0, 0.8)])
            root = hil + rng.normal(0, 6.0, size=3)
            segs += branching_tree(rng, root, d, float(rng.uniform(24.0, 34.0)), 4.5, generations=3,
                                   spread_deg=(15.0, 30.0))
        key = f"lungfindings:viral:{s}"  # the perihilar weight on the coarse grid, once per patient
        if key not in anatomy._cache:
            x, y, z = cg.grid()
            anatomy._cache[key] = torch.exp(-0.5 * (((x - hil[0]) / (0.45 * w_)) ** 2 + ((z - hil[2]) / (0.35 * h_)) ** 2
                                                    + ((y - hil[1]) / 60.0) ** 2))
        perihilar = anatomy._cache[key]
        fill = cg.up(haze * perihilar * (1.0 + 0.3 * smooth_noise(rng, cg.shape, 12.0, cg.spacing_mm)))
        for seg in segs:  # the cuffed bronchi, painted (max) over the haze
            tube(fill, box, seg[0], seg[1], seg[2], seg[3], value=wall_d, lumen=0.4)
        parts.append((box, fill.clamp_(0, 1).mul_(side_["to_water"])))
    delta, origin = merge(parts)
    return [crop_lesion("viral_pneumonia", delta, side=side, zone=zone, severity=severity, origin=origin)]


# ----------------------------------------------------------------------------- tuberculosis
def tuberculosis(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
                 severity: str = "moderate") -> list[Lesion]:
    """Apical / posterior upper-lobe consolidation with a thick-walled cavity and satellite nodules."""
    side = pick(rng, side, _LR, "side")
    zone = pick(rng, zone, ("upper",), "zone")
    R = severity_scale(severity, 17.0, 24.0, 32.0) * float(rng.uniform(0.9, 1.1))
    n_sat = int(severity_scale(severity, 3, 6, 10))
    sp = anatomy.spacing_mm
    ext = lung_extent_mm(anatomy, side)
    h = ext["z1"] - ext["z0"]
    lbox = z_box(anatomy, organ_box(anatomy, [f"lung_upper_{side}"], pad=2), ext["z0"] + 0.55 * h, None)
    lobe = lbox.organ(f"lung_upper_{side}")
    _, ly, lz = lbox.grid()
    hgt = (lz - ext["z0"]) / h
    post = (ext["y0"] + 0.6 * (ext["y1"] - ext["y0"]) - ly)  # > 0: posterior part
    cand = lobe * sigmoid((hgt - 0.72) / 0.03) * sigmoid((0.9 - hgt) / 0.03) * sigmoid(post / 5.0)
    c = np.asarray(random_point(rng, lbox, cand, 0.9))
    box = ball_box(anatomy, c, 2.2 * R + 30.0)
    lung = box.organ(f"lung_{side}")
    x, y, z = box.grid()
    r = torch.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
    rr = R * (1.0 + 0.2 * smooth_noise(rng, box.shape, 14.0, sp)) + 2.5 * smooth_noise(rng, box.shape, 5.0, sp)
    fill = 0.95 * sigmoid((rr - r) / 2.5)
    # patchy (acinar) airspace disease around it, fading out over ~2 radii
    patch = sigmoid((smooth_noise(rng, box.shape, 7.0, sp) - 0.3) / 0.25) * torch.exp(-((r / (1.6 * R)) ** 2))
    fill = torch.maximum(fill, 0.6 * patch)
    # the cavity: air inside a thick wall (>= 4 mm), off-centre
    rc = max(R - max(5.0, 0.5 * R), 4.0) * float(rng.uniform(0.8, 1.0))
    cc = c + _unit(rng.standard_normal(3)) * 0.2 * (R - rc)
    rcav = torch.sqrt((x - cc[0]) ** 2 + (y - cc[1]) ** 2 + (z - cc[2]) ** 2)
    cavity = sigmoid((rc * (1.0 + 0.12 * smooth_noise(rng, box.shape, 10.0, sp)) - rcav) / 0.8)
    # satellite nodules around it, and fibrotic strands to the hilum
    extra = torch.zeros(box.shape)
    for _ in range(n_sat):
        direction = _unit(rng.standard_normal(3) * np.array([1.0, 1.0, 0.7]))
        p = c + direction * float(rng.uniform(1.25 * R, 1.25 * R + 20.0))
        rn = float(rng.uniform(2.5, 4.5))
        tube(extra, box, p, p + 0.01, rn, rn, value=0.95)
    if severity != "mild":
        hil = np.asarray(hilum_mm(anatomy, side))
        for _ in range(int(rng.integers(2, 4))):
            end = hil + rng.normal(0, 8.0, size=3)
            start = c + _unit(end - c) * R * 0.7
            tube(extra, box, start, start + 0.6 * (end - start), 1.3, 0.9, value=0.8)
    fill = torch.maximum(fill, extra)
    mu = box.mu
    delta = lung * ((1.0 - cavity) * fill * (MU_AIRLESS - mu) + cavity * (MU_AIR - mu))
    return [crop_lesion("tuberculosis", delta, side=side, zone=zone, severity=severity, origin=box.origin,
                        cavity_radius_mm=float(rc), satellites=n_sat)]


SPECS = [
    FindingSpec("consolidation", consolidation, _LR, _UML,
                "segmental airspace consolidation with fluffy margins and air bronchograms"),
    FindingSpec("pneumonia", pneumonia, _LR, _UML,
                "lobar pneumonia: dense consolidation confined to one lobe, air bronchograms"),
    FindingSpec("atelectasis", atelectasis, _LR, _UML,
                "plate-like basal bands, or lobar collapse (a smaller, airless lobe)"),
    FindingSpec("edema", edema, ("bilateral",), ("diffuse",),
                "bilateral perihilar bat-wing haze with Kerley B lines"),
    FindingSpec("infiltration", infiltration, _LRB, ("upper", "middle", "lower", "diffuse"),
                "patchy ill-defined partial airspace opacities"),
    FindingSpec("fibrosis", fibrosis, _LRB, ("lower", "diffuse"),
                "reticular net-like opacities, peripheral and basal predominant"),
    FindingSpec("emphysema", emphysema, ("bilateral",), ("diffuse",),
                "hyperlucent lungs with flattened, low hemidiaphragms (bullae when severe)"),
    FindingSpec("ground_glass_covid", ground_glass_covid, ("bilateral",), ("lower", "diffuse"),
                "COVID-19: bilateral peripheral lower-zone ground glass"),
    FindingSpec("viral_pneumonia", viral_pneumonia, ("bilateral",), ("diffuse",),
                "bilateral perihilar peribronchial interstitial opacities"),
    FindingSpec("tuberculosis", tuberculosis, _LR, ("upper",),
                "apical consolidation with a thick-walled cavity, satellite nodules, fibrotic strands"),
]
