"""Focal findings: nodule, mass, calcified granuloma, calcification, lung opacity, other lesion.

Each finding replaces attenuation on a small sub-box of the anatomy grid (see :mod:`.base` for
the contract): a lung lesion replaces aerated lung (mu ~0.003) by soft tissue (~0.02) or calcium,
weighted by the lung occupancy so it never spills into the mediastinum or chest wall.  Shapes are
lobulated spheres whose radius is modulated by a band-limited random field (gaussian-filtered
noise); edges are soft over about one voxel (well-defined lesions) or several millimetres
(ill-defined opacities).

The small geometric helpers here (sub-boxes, smooth noise, soft balls, thin tubes, lung sampling)
are shared by :mod:`.mediastinum` and :mod:`.devices`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..anatomy import Anatomy, Lesion
from .base import MU_CALCIUM, MU_WATER, FindingSpec, crop_lesion, organ_bbox, organ_crop, pick, severity_scale
from .resample import gaussian_weights, interpolated_moments, resize_weights, separable

__all__ = ["SPECS", "make_nodule", "make_mass", "make_calcified_granuloma", "make_calcification",
           "make_lung_opacity", "make_other_lesion"]

LUNG_SIDES = ("left", "right")
LUNG_ZONES = ("upper", "middle", "lower")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

class SubBox:
    """An axis-aligned sub-box of the anatomy grid around a point: slices, origin, and the
    patient-frame offsets (mm) of its voxel centres from that point."""

    def __init__(self, anatomy: Anatomy, center_mm: Sequence[float], half_mm: Sequence[float] | float):
        half = [float(half_mm)] * 3 if np.isscalar(half_mm) else [float(h) for h in half_mm]  # type: ignore[arg-type]
        lo, hi = [], []
        for c, h, s, n in zip(center_mm, half, anatomy.spacing_mm, anatomy.shape):
            i0 = int(math.floor((c - h + n * s / 2) / s - 0.5))
            i1 = int(math.ceil((c + h + n * s / 2) / s - 0.5)) + 1
            lo.append(min(max(i0, 0), n - 1))
            hi.append(max(min(i1, n), lo[-1] + 1))
        self.origin = tuple(lo)
        self.slices = tuple(slice(a, b) for a, b in zip(lo, hi))
        self.shape = tuple(b - a for a, b in zip(lo, hi))
        self.center_mm = tuple(float(c) for c in center_mm)
        self.spacing_mm = anatomy.spacing_mm
        axes = [((torch.arange(a, b, dtype=torch.float32) + 0.5) * s - n * s / 2) - c
                for a, b, s, n, c in zip(lo, hi, anatomy.spacing_mm, anatomy.shape, self.center_mm)]
        self.d = torch.meshgrid(*axes, indexing="ij")  # (dx, dy, dz) each of self.shape

    def local_slices(self, lo_mm, hi_mm):
        """Slices of this box covering offsets [lo_mm, hi_mm] (mm from the box centre); None if empty."""
        out = []
        for ax, (lo, hi) in enumerate(zip(lo_mm, hi_mm)):
            first = float(self.d[ax][(0,) * 3])
            s = self.spacing_mm[ax]
            i0 = max(int(math.floor((lo - first) / s)), 0)
            i1 = min(int(math.ceil((hi - first) / s)) + 1, self.shape[ax])
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def take(self, vol: torch.Tensor) -> torch.Tensor:
        return vol[self.slices]

    def radius(self, scale: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
        dx, dy, dz = self.d
        return torch.sqrt((dx / scale[0]) ** 2 + (dy / scale[1]) ** 2 + (dz / scale[2]) ** 2)


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_mm: float,
                 spacing_mm: Sequence[float]) -> torch.Tensor:
    """Band-limited random field (gaussian-filtered white noise) with zero mean and unit std.

    Smooth fields (``sigma_mm`` of several voxels) are drawn on a grid coarser by up to 4 (about
    sigma / 2 per cell) and interpolated trilinearly: the same field statistics, far cheaper."""
    shape = tuple(int(s) for s in shape)
    f = max(1, min(4, int(sigma_mm / (1.5 * max(spacing_mm)))))
    small = tuple(max(2, -(-n // f) + 1) for n in shape) if f > 1 else shape
    white = torch.from_numpy(rng.standard_normal(small).astype(np.float32))
    # gaussian_filter(mode="reflect", truncate=3) and, if f > 1, trilinear interpolation to ``shape``
    # (align_corners=False): one small matrix per axis (see .resample), applied in one separable pass
    ws = [gaussian_weights(m, max(sigma_mm / (s * f), 0.3), "reflect", 3.0) for m, s in zip(small, spacing_mm)]
    if f > 1:  # normalised on the small grid (the weights' rows sum to 1: constants are kept)
        ws = [resize_weights(m, n, False) @ w for m, n, w in zip(small, shape, ws)]
        mean, sd = interpolated_moments(white, ws)
        return separable((white - mean) / sd if sd > 0 else white - mean, *ws)
    out = separable(white, *ws)
    out = out - out.mean()
    sd = float(out.std())
    return out / sd if sd > 0 else out


def soft_step(signed_mm: torch.Tensor, width_mm: float) -> torch.Tensor:
    """Occupancy from a signed distance (positive inside): a linear ramp of ``width_mm`` centred on
    the surface (keeps the volume of the shape to first order)."""
    return (0.5 + signed_mm / max(width_mm, 1e-6)).clamp(0.0, 1.0)


def tube_profile(dist_mm: torch.Tensor, radius_mm: torch.Tensor | float, voxel_mm: float) -> torch.Tensor:
    """Occupancy of a thin tube (radius about a voxel or less) at distance ``dist_mm`` from its axis:
    a gaussian whose cross-section area is pi r^2 (so the line integrals are right), wide enough
    (>= ~half a voxel) not to alias on the grid; clipped at 1."""
    r = torch.as_tensor(radius_mm, dtype=torch.float32)
    sig2 = (r / 2) ** 2 + (0.45 * voxel_mm) ** 2
    return (r**2 / (2 * sig2) * torch.exp(-dist_mm**2 / (2 * sig2))).clamp(0.0, 1.0)


def segment_distance(d: Sequence[torch.Tensor], a: Sequence[float], b: Sequence[float]):
    """Distance (mm) from points ``d`` (dx, dy, dz tensors) to segment a-b, and the segment parameter t."""
    ab = [bb - aa for aa, bb in zip(a, b)]
    L2 = max(sum(v * v for v in ab), 1e-9)
    t = (((d[0] - a[0]) * ab[0] + (d[1] - a[1]) * ab[1] + (d[2] - a[2]) * ab[2]) / L2).clamp(0.0, 1.0)
    dist = torch.sqrt((d[0] - a[0] - t * ab[0]) ** 2 + (d[1] - a[1] - t * ab[1]) ** 2 + (d[2] - a[2] - t * ab[2]) ** 2)
    return dist, t


def organ_centroid(anatomy: Anatomy, name: str) -> tuple[float, float, float]:
    """``anatomy.centroid_mm`` memoised on the anatomy, computed on the organ's bounding box."""
    key = f"findings.centroid:{name}"
    if key not in anatomy._cache:
        (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, name, 0.01)
        occ = anatomy.organ(name)[i0:i1, j0:j1, k0:k1]
        m = float(occ.sum())
        anatomy._cache[key] = tuple(float((occ * c[i0:i1, j0:j1, k0:k1]).sum()) / m for c in anatomy.coords_mm())
    return anatomy._cache[key]


def zone_z_range(anatomy: Anatomy, side: str, zone: str) -> tuple[int, int]:
    """z index range [lo, hi) of a lung zone (thirds of that lung's extent, as in ``lung_zone``)."""
    (_, _), (_, _), (k0, k1) = organ_bbox(anatomy, f"lung_{side}")
    if zone == "diffuse":
        return k0, k1
    cut = np.linspace(k0, k1, 4).round().astype(int)
    return {"lower": (int(cut[0]), int(cut[1])), "middle": (int(cut[1]), int(cut[2])),
            "upper": (int(cut[2]), int(cut[3]))}[zone]


def lung_thickness(anatomy: Anatomy, side: str) -> torch.Tensor:
    """(X, Z) antero-posterior path length (mm) through lung ``side`` of each column (PA ray)."""
    key = f"findings.lung_thickness:{side}"
    if key not in anatomy._cache:
        anatomy._cache[key] = anatomy.organ(f"lung_{side}").sum(1) * anatomy.spacing_mm[1]
    return anatomy._cache[key]


def lung_depth_mm(anatomy: Anatomy, side: str, sl: tuple[slice, slice, slice]) -> torch.Tensor:
    """``anatomy.distance_inside_mm(f"lung_{side}")[sl]`` (``sl``: three slices with explicit bounds).

    Computed once per patient on the lung's bounding box plus one voxel and kept there: outside
    it there is no lung, and the nearest non-lung voxel of a lung voxel is never beyond that margin
    (clamping it into the box only brings it closer; where the box meets the grid's edge, so does the
    whole-grid transform).  The same distances for ~1/10 of the work and memory."""
    key = f"findings.lung_depth:{side}"
    if key not in anatomy._cache:
        from scipy.ndimage import distance_transform_edt

        (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, f"lung_{side}")
        lo = [max(a - 1, 0) for a in (i0, j0, k0)]
        hi = [min(b + 1, n) for b, n in zip((i1, j1, k1), anatomy.shape)]
        m = (anatomy.organ(f"lung_{side}")[tuple(slice(a, b) for a, b in zip(lo, hi))] >= 0.5).numpy()
        anatomy._cache[key] = (lo, torch.from_numpy(distance_transform_edt(m, sampling=anatomy.spacing_mm)
                                                    .astype(np.float32)))
    lo, d = anatomy._cache[key]
    out = torch.zeros([s.stop - s.start for s in sl])
    src = tuple(slice(max(s.start - o, 0), min(s.stop - o, n)) for s, o, n in zip(sl, lo, d.shape))
    if all(a.stop > a.start for a in src):
        dst = tuple(slice(a.start + o - s.start, a.stop + o - s.start) for a, s, o in zip(src, sl, lo))
        out[dst] = d[src]
    return out


def sample_lung_point(anatomy: Anatomy, rng: np.random.Generator, side: str, zone: str,
                      min_depth_mm: float, occ_min: float = 0.9,
                      lung_field: float | None = None) -> tuple[tuple[float, float, float], float]:
    """A random point (mm) in lung ``side``/``zone`` with occupancy >= ``occ_min`` lying at least
    ``min_depth_mm`` inside that lung; if no voxel is that deep, one of the deepest in the zone.
    ``lung_field``: also prefer points seen through the lung field on a PA film (not over the
    mediastinum, the spine or the diaphragm domes): the PA ray through them crosses at least that
    fraction of the largest lung thickness of that side.  Returns the point and its depth (mm)."""
    (i0, j0, k0), shape, flat, depth, clear = _lung_voxels(anatomy, side, zone, occ_min, lung_field)
    deep = depth >= np.float32(min_depth_mm)  # (float32 comparisons, as on the tensors)
    if clear is not None and deep.any():
        if (deep & clear).any():
            deep = deep & clear
    if not deep.any():
        best = float(depth.max()) if depth.size else 0.0
        if best <= 0:
            raise ValueError(f"lung {side} {zone} has no voxel with occupancy >= {occ_min}")
        deep = depth >= np.float32(0.85 * best)
    cand = np.flatnonzero(deep)
    c = int(cand[int(rng.integers(cand.size))])
    i, j, k = (int(v) for v in np.unravel_index(int(flat[c]), shape))
    jitter = rng.uniform(-0.5, 0.5, size=3)
    p = anatomy.index_to_mm((i0 + i + jitter[0], j0 + j + jitter[1], k0 + k + jitter[2]))
    return p, float(depth[c])


def _lung_voxels(anatomy: Anatomy, side: str, zone: str, occ_min: float, lung_field: float | None):
    """The voxels :func:`sample_lung_point` draws from, once per patient: the corner and shape of the
    zone's slab of the lung's box, the flat (C-order) indices in the slab of the voxels with occupancy
    >= ``occ_min``, their depth in the lung (mm) and whether their PA ray is in the lung field."""
    key = f"findings.lung_voxels:{side}:{zone}:{occ_min}:{lung_field}"
    if key not in anatomy._cache:
        (i0, i1), (j0, j1), _ = organ_bbox(anatomy, f"lung_{side}")
        k0, k1 = zone_z_range(anatomy, side, zone)
        ok = (anatomy.organ(f"lung_{side}")[i0:i1, j0:j1, k0:k1] >= occ_min).numpy()
        flat = np.flatnonzero(ok)
        depth = lung_depth_mm(anatomy, side, (slice(i0, i1), slice(j0, j1), slice(k0, k1))).numpy().ravel()[flat]
        clear = None
        if lung_field is not None:
            th = lung_thickness(anatomy, side)
            col = (th[i0:i1, k0:k1] >= lung_field * float(th.max())).numpy()  # (x, z) columns in the lung field
            ii, _, kk = np.unravel_index(flat, ok.shape)
            clear = col[ii, kk]
        anatomy._cache[key] = ((i0, j0, k0), ok.shape, flat, depth, clear)
    return anatomy._cache[key]


def check_choice(value: str | None, options: Sequence[str], what: str) -> None:
    if value is not None and value not in options:
        raise ValueError(f"{what} must be one of {tuple(options)}, got {value!r}")


def lobulated_ball(box: SubBox, rng: np.random.Generator, radius_mm: float, lobulation: float,
                   edge_mm: float, axes: Sequence[float] = (1.0, 1.0, 1.0), lobe_mm: float | None = None) -> torch.Tensor:
    """Soft occupancy of a sphere (ellipsoid ``axes``) whose radius is modulated by a smooth random
    field: ``R (1 + lobulation * n)``, n of unit std with correlation length ``lobe_mm``."""
    n = smooth_noise(rng, box.shape, lobe_mm if lobe_mm is not None else 0.45 * radius_mm, box.spacing_mm)
    r = box.radius(axes)
    return soft_step(radius_mm * (1.0 + lobulation * n.clamp(-2.5, 2.5)) - r, edge_mm)


def replace(mu: torch.Tensor, occ: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """delta mu that moves ``mu`` to ``target`` where ``occ`` is 1 (linearly in between)."""
    return occ * (target - mu)


def _lesion(name, delta, box: SubBox, side, zone, severity, **attrs) -> Lesion:
    return crop_lesion(name, delta.float(), side=side, zone=zone, severity=severity, origin=box.origin, **attrs)


def _lung_lesion(name: str, anatomy: Anatomy, rng: np.random.Generator, side: str | None, zone: str | None):
    check_choice(side, LUNG_SIDES, "side")
    check_choice(zone, LUNG_ZONES, "zone")
    return pick(rng, side, LUNG_SIDES, "side"), pick(rng, zone, LUNG_ZONES, "zone")


# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------

def make_nodule(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
                severity: str = "moderate") -> list[Lesion]:
    """A round, well-defined soft-tissue nodule inside the lung; diameter 6-12 / 12-20 / 20-30 mm."""
    lo, hi = severity_scale(severity, (6.0, 12.0), (12.0, 20.0), (20.0, 30.0))  # type: ignore[misc]
    side, zone = _lung_lesion("nodule", anatomy, rng, side, zone)
    diam = float(rng.uniform(lo, hi))
    R, lob = diam / 2, float(rng.uniform(0.03, 0.08))
    axes = tuple(float(a) for a in rng.uniform(0.88, 1.12, size=3))
    vox = min(anatomy.spacing_mm)
    center, _ = sample_lung_point(anatomy, rng, side, zone, R * (1 + 2.5 * lob) * max(axes) + vox,
                                  lung_field=0.5)
    box = SubBox(anatomy, center, R * (1 + 3 * lob) * max(axes) + 2 * vox)
    occ = lobulated_ball(box, rng, R, lob, edge_mm=0.8 * vox, axes=axes)
    target = MU_WATER * float(rng.uniform(1.0, 1.08)) * (1 + 0.03 * smooth_noise(rng, box.shape, 2.0, box.spacing_mm))
    delta = replace(box.take(anatomy.mu), occ * organ_crop(anatomy, "lung", box.slices), target)
    return [_lesion("nodule", delta, box, side, zone, severity, diameter_mm=diam, center_mm=center)]


def _spicules(box: SubBox, rng: np.random.Generator, R: float, count: int, vox: float) -> torch.Tensor:
    """Thin tapering strands radiating from the surface of a ball of radius R (centre at box centre)."""
    occ = torch.zeros(box.shape)
    for _ in range(count):
        u = rng.standard_normal(3)
        u /= np.linalg.norm(u)
        length = float(rng.uniform(0.3, 0.6)) * R + float(rng.uniform(4.0, 10.0))
        bend = rng.standard_normal(3) * 0.15
        a = (0.85 * R) * u
        mid = (R + 0.5 * length) * (u + bend)
        b = (R + length) * (u + 2 * bend)
        r0 = float(rng.uniform(1.4, 2.4))
        for (p, q, ra, rb) in ((a, mid, r0, 0.6 * r0), (mid, b, 0.6 * r0, 0.25 * r0)):
            sl = box.local_slices(np.minimum(p, q) - 2 * vox, np.maximum(p, q) + 2 * vox)
            if sl is None:
                continue
            d = [t[sl] for t in box.d]
            dist, t = segment_distance(d, p, q)
            occ[sl] = torch.maximum(occ[sl], tube_profile(dist, ra + (rb - ra) * t, vox))
    return occ


def make_mass(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
              severity: str = "moderate") -> list[Lesion]:
    """A lung mass > 3 cm (32-42 / 42-58 / 58-80 mm), lobulated, often spiculated; it may abut the
    pleura or the hilum (the lung occupancy clips it there)."""
    lo, hi = severity_scale(severity, (32.0, 42.0), (42.0, 58.0), (58.0, 80.0))  # type: ignore[misc]
    side, zone = _lung_lesion("mass", anatomy, rng, side, zone)
    diam = float(rng.uniform(lo, hi))
    R = diam / 2
    lob = float(rng.uniform(0.1, 0.18))
    spiculated = bool(rng.random() < 0.6)
    axes = tuple(float(a) for a in rng.uniform(0.85, 1.15, size=3))
    vox = min(anatomy.spacing_mm)
    center, _ = sample_lung_point(anatomy, rng, side, zone, float(rng.uniform(0.45, 0.8)) * R)
    reach = R * (1 + 2.5 * lob) * max(axes) + (0.6 * R + 12.0 if spiculated else 0.0) + 2 * vox
    box = SubBox(anatomy, center, reach)
    occ = lobulated_ball(box, rng, R, lob, edge_mm=vox, axes=axes, lobe_mm=0.28 * R)
    if spiculated:
        occ = torch.maximum(occ, _spicules(box, rng, R * min(axes), int(rng.integers(10, 20)), vox))
    target = MU_WATER * float(rng.uniform(1.02, 1.1)) * (1 + 0.05 * smooth_noise(rng, box.shape, 4.0, box.spacing_mm))
    delta = replace(box.take(anatomy.mu), occ * organ_crop(anatomy, "lung", box.slices), target)
    return [_lesion("mass", delta, box, side, zone, severity, diameter_mm=diam, center_mm=center,
                    spiculated=spiculated)]


def make_calcified_granuloma(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                             zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """Small (3-8 mm) calcium-density lung nodules, very dense and sharp; one lesion each.
    mild: one 3-5 mm; moderate: one or two 4-7 mm; severe: two to four 5.5-8 mm."""
    (dlo, dhi), (nlo, nhi) = severity_scale(severity, ((3.0, 5.0), (1, 1)), ((4.0, 7.0), (1, 2)),  # type: ignore[misc]
                                            ((5.5, 8.0), (2, 4)))
    side, zone = _lung_lesion("calcified_granuloma", anatomy, rng, side, zone)
    vox = min(anatomy.spacing_mm)
    out = []
    for _ in range(int(rng.integers(nlo, nhi + 1))):
        diam = float(rng.uniform(dlo, dhi))
        R = diam / 2
        center, _ = sample_lung_point(anatomy, rng, side, zone, R + 2 * vox, lung_field=0.5)
        box = SubBox(anatomy, center, R + 2 * vox)
        occ = lobulated_ball(box, rng, R, 0.06, edge_mm=vox, lobe_mm=2.0)
        target = MU_CALCIUM * float(rng.uniform(1.6, 2.0))  # dense, homogeneous calcification
        delta = replace(box.take(anatomy.mu), occ * organ_crop(anatomy, "lung", box.slices), target)
        out.append(_lesion("calcified_granuloma", delta, box, side, zone, severity, diameter_mm=diam,
                           center_mm=center))
    return out


def occupancy_normals(occ: torch.Tensor, spacing_mm, smooth_mm: float = 2.0):
    """Outward unit normals (3, ...) of an occupancy field and its gradient magnitude (per mm)."""
    from scipy.ndimage import gaussian_filter

    o = gaussian_filter(occ.numpy().astype(np.float32), sigma=[smooth_mm / s for s in spacing_mm])
    g = np.gradient(o, *spacing_mm)
    g = torch.from_numpy(np.stack(g).astype(np.float32))
    mag = g.norm(dim=0)
    return -g / mag.clamp_min(1e-6), mag


def _aortic_knob_calcification(anatomy: Anatomy, rng: np.random.Generator, severity: str) -> tuple[torch.Tensor, SubBox, dict]:
    """Curvilinear intimal calcification along the outer (superior and left) wall of the aortic arch,
    in patches of the wall that a PA beam meets tangentially (so it projects as a thin curved line)."""
    box, wall_occ, cand = _aortic_arch_wall(anatomy)
    extent = severity_scale(severity, 0.35, 0.6, 0.85)
    patches = smooth_noise(rng, box.shape, 5.0, box.spacing_mm)
    thr = float(torch.quantile(patches[cand], 1.0 - extent)) if bool(cand.any()) else 0.0
    plaque = ((patches - thr) / 0.4).clamp(0, 1)
    occ = wall_occ * plaque
    target = MU_CALCIUM * float(rng.uniform(1.6, 2.0))
    delta = occ * (target - box.take(anatomy.mu)).clamp_min(0.0) * 0.7  # a thin rim: ~70 % of a voxel
    return delta, box, {"site": "aortic_arch"}


def _aortic_arch_wall(anatomy: Anatomy) -> tuple[SubBox, torch.Tensor, torch.Tensor]:
    """The arch's box, the occupancy of its outer wall seen edge-on in PA (before the random plaques),
    and where it exceeds 0.05; memoised on the anatomy (it depends on the patient only)."""
    key = "findings.aortic_arch_wall"
    if key in anatomy._cache:
        return anatomy._cache[key]
    (_, _), (_, _), (_, k1) = organ_bbox(anatomy, "aorta")
    top = anatomy.index_to_mm((0, 0, k1 - 1))[2]
    aorta = anatomy.organ("aorta")
    kz = int(round(anatomy.mm_to_index((0, 0, top - 45.0))[2]))
    arch = aorta[:, :, kz:]
    m = float(arch.sum())
    coords = [c[:, :, kz:] for c in anatomy.coords_mm()]
    c = [float((arch * v).sum()) / m for v in coords]
    box = SubBox(anatomy, (c[0], c[1], top - 22.0), (45.0, 45.0, 30.0))
    occ_a = box.take(aorta)
    n, _ = occupancy_normals(occ_a, box.spacing_mm, 2.5)
    x, z = box.d[0] + box.center_mm[0], box.d[2] + box.center_mm[2]
    wall = (1.0 - (2.0 * occ_a - 1.0).abs()).clamp(0, 1)  # the one-voxel partial-volume boundary
    # outer curve of the arch: its roof (normal up) and the knob's left wall (normal to the left),
    # seen edge-on in PA (small antero-posterior normal component).
    outer = torch.maximum(((n[2] - 0.35) / 0.3).clamp(0, 1), ((n[0] - 0.45) / 0.3).clamp(0, 1) * (x > c[0]))
    edge_on = ((0.55 - n[1].abs()) / 0.25).clamp(0, 1)
    arch_zone = torch.sigmoid((z - (top - 40.0)) / 3.0)
    wall_occ = wall * outer * edge_on * arch_zone
    anatomy._cache[key] = (box, wall_occ, wall_occ > 0.05)
    return anatomy._cache[key]


def _calcified_lymph_node(anatomy: Anatomy, rng: np.random.Generator, side: str, severity: str, station: str):
    """A calcified lymph node (chunky, 6-14 mm, mottled 'popcorn' calcium) at the medial lung boundary:
    ``station`` "hilar" (around and below the carina) or "paratracheal" (above it)."""
    diam = float(rng.uniform(*severity_scale(severity, (6.0, 8.0), (8.0, 11.0), (11.0, 14.0))))  # type: ignore[misc]
    R = diam / 2
    zlo, keep = _node_sites(anatomy, side, station)
    if keep is None:
        raise ValueError(f"no {station} position found on the {side}")
    i, j, k = (int(v) for v in keep[int(rng.integers(len(keep)))])
    center = anatomy.index_to_mm((i, j, zlo + k))
    vox = min(anatomy.spacing_mm)
    box = SubBox(anatomy, center, R * 1.5 + 2 * vox)
    occ = lobulated_ball(box, rng, R, 0.15, edge_mm=vox, lobe_mm=0.4 * R)
    clumps = (0.8 + 0.2 * smooth_noise(rng, box.shape, 1.5, box.spacing_mm).clamp(-1, 1))  # mottled ('popcorn')
    target = MU_CALCIUM * float(rng.uniform(1.6, 2.0)) * clumps
    delta = occ * (target - box.take(anatomy.mu)).clamp_min(0.0)
    return delta, box, {"site": f"{station}_node", "diameter_mm": diam, "center_mm": center}


def _node_sites(anatomy: Anatomy, side: str, station: str):
    """Candidate voxels of a calcified lymph node at ``station`` (see :func:`_calcified_lymph_node`):
    the slab's first z index and the candidates (n, 3) in it, or None; memoised on the anatomy."""
    key = f"findings.node_sites:{side}:{station}"
    if key in anatomy._cache:
        return anatomy._cache[key]
    (_, _), (_, _), (kb, _) = organ_bbox(anatomy, "trachea")  # the carina: the trachea's lowest level
    z_carina = anatomy.index_to_mm((0, 0, kb))[2]
    z_lo, z_hi = (z_carina - 35.0, z_carina + 8.0) if station == "hilar" else (z_carina + 5.0, z_carina + 45.0)
    zlo = max(int(round(anatomy.mm_to_index((0, 0, z_lo))[2])), 0)
    zhi = min(int(round(anatomy.mm_to_index((0, 0, z_hi))[2])) + 1, anatomy.shape[2])
    (i0, i1), (j0, j1), _ = organ_bbox(anatomy, f"lung_{side}")  # (no lung >= 0.5 outside its box)
    sl = (slice(i0, i1), slice(j0, j1), slice(zlo, zhi))
    lung_s = anatomy.organ(f"lung_{side}")[sl]
    d = lung_depth_mm(anatomy, side, sl)
    x, y = anatomy.coords_mm()[0][sl], anatomy.coords_mm()[1][sl]
    tc = organ_centroid(anatomy, "trachea")
    sign = 1.0 if side == "left" else -1.0
    # lung voxels 1-8 mm inside the lung boundary, on the mediastinal side, near the airway in depth
    ok = (lung_s >= 0.5) & (d > 1.0) & (d < 8.0) & ((x - tc[0]) * sign > 0) & ((x - tc[0]) * sign < 70.0)
    ok &= (y > tc[1] - 35.0) & (y < tc[1] + 30.0)
    # seen beside the mediastinum on a PA film, not through it: enough lung in front and behind
    th = lung_thickness(anatomy, side)
    seen = ok & (th[i0:i1, zlo:zhi] >= 0.3 * float(th.max()))[:, None, :]
    ok = seen if bool(seen.any()) else ok
    keep = None
    if bool(ok.any()):
        idx = torch.nonzero(ok)
        order = torch.argsort(((x - tc[0]).abs())[ok])
        keep = idx[order[: max(1, len(order) // 4)]]  # among the most medial candidates
        keep = keep + torch.tensor([i0, j0, 0])  # grid x, y; z in the slab
    anatomy._cache[key] = (zlo, keep)
    return anatomy._cache[key]


def make_calcification(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                       zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """Calcifications other than granulomas (VinBigData "Calcification").

    * zone "upper", side "midline" or "left": curvilinear calcification of the aortic knob / arch
      wall (the default most of the time);
    * zone "upper", side "right": a calcified right paratracheal lymph node;
    * zone "middle", side "left" / "right": a calcified hilar lymph node.
    """
    check_choice(side, ("midline", "left", "right"), "side")
    check_choice(zone, ("upper", "middle"), "zone")
    severity_scale(severity, 0, 0, 0)
    if zone is None:
        if side == "midline":
            zone = "upper"
        elif side is None:
            zone = "upper" if rng.random() < 0.8 else "middle"
        else:
            zone = "middle" if rng.random() < 0.7 else "upper"
    if side is None:
        side = "midline" if zone == "upper" and rng.random() < 0.85 else str(("left", "right")[int(rng.integers(2))])
    if zone == "upper" and side in ("midline", "left"):
        delta, box, attrs = _aortic_knob_calcification(anatomy, rng, severity)
    elif zone == "upper":
        delta, box, attrs = _calcified_lymph_node(anatomy, rng, side, severity, "paratracheal")
    elif side == "midline":
        raise ValueError("calcification: side 'midline' is the aortic arch, in the upper zone")
    else:
        delta, box, attrs = _calcified_lymph_node(anatomy, rng, side, severity, "hilar")
    return [_lesion("calcification", delta, box, side, zone, severity, **attrs)]


def make_lung_opacity(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                      zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """A nonspecific, ill-defined, round-ish opacity (VinBigData "Lung Opacity"): patchy partial
    filling of the air spaces, densest centrally, fading over several mm; 20-35 / 35-55 / 55-80 mm."""
    lo, hi = severity_scale(severity, (20.0, 35.0), (35.0, 55.0), (55.0, 80.0))  # type: ignore[misc]
    side, zone = _lung_lesion("lung_opacity", anatomy, rng, side, zone)
    diam = float(rng.uniform(lo, hi))
    R = diam / 2
    edge = float(rng.uniform(0.3, 0.45)) * R
    axes = tuple(float(a) for a in rng.uniform(0.8, 1.2, size=3))
    center, _ = sample_lung_point(anatomy, rng, side, zone, 0.6 * R, lung_field=0.4)
    box = SubBox(anatomy, center, (R + edge) * 1.25 * max(axes) + 4.0)
    occ = lobulated_ball(box, rng, R, 0.18, edge_mm=2 * edge, axes=axes, lobe_mm=0.5 * R)
    fill = float(rng.uniform(0.7, 0.95)) * severity_scale(severity, 0.85, 1.0, 1.1)
    patchy = (0.85 + 0.3 * smooth_noise(rng, box.shape, 3.5, box.spacing_mm)).clamp(0.3, 1.2)
    occ = (occ * fill * patchy).clamp(0, 1)
    delta = replace(box.take(anatomy.mu), occ * organ_crop(anatomy, "lung", box.slices), MU_WATER)
    delta = delta.clamp_min(0.0)  # an opacity never lowers attenuation (vessels stay)
    return [_lesion("lung_opacity", delta, box, side, zone, severity, diameter_mm=diam, center_mm=center)]


def _rib_site(anatomy: Anatomy, rng: np.random.Generator, side: str, zone: str):
    """A point on a rib of the lateral chest wall (seen edge-on in PA) next to the lung, in the lung
    zone; returns the point (mm), the rib's local direction (unit), and the inward normal (unit)."""
    k0, k1 = zone_z_range(anatomy, side, zone)
    (i0, i1), _, _ = organ_bbox(anatomy, f"lung_{side}")
    ribs = anatomy.organ("ribs")[:, :, k0:k1]
    lung_slab = (anatomy.organ(f"lung_{side}")[:, :, k0:k1] >= 0.5).float()
    # "next to the lung": within about 6 mm of it (a max-filter), but not inside it
    from scipy.ndimage import maximum_filter

    near_lung = torch.from_numpy(maximum_filter(lung_slab.numpy().astype(np.uint8), size=(7, 7, 5)) > 0)
    x, y, _ = (c[:, :, k0:k1] for c in anatomy.coords_mm())
    lung = lung_slab > 0
    # per axial slice: the lateral-most lung x and the lung's mean y
    sign = 1.0 if side == "left" else -1.0
    xs = torch.where(lung, x * sign, torch.full_like(x, -1e9)).amax(dim=(0, 1))  # (Z,) lateral extent
    ys = (lung * y).sum(dim=(0, 1)) / lung.sum(dim=(0, 1)).clamp_min(1)
    ok = (ribs >= 0.5) & near_lung & (lung_slab < 0.5)
    ok &= (x * sign > xs[None, None, :] - 25.0) & ((y - ys[None, None, :]).abs() < 35.0)
    if not bool(ok.any()):
        ok = (ribs >= 0.5) & near_lung & (x * sign > xs[None, None, :] - 50.0)
    if not bool(ok.any()):
        raise ValueError(f"no rib next to the {side} lung in the {zone} zone")
    idx = torch.nonzero(ok)
    i, j, k = (int(v) for v in idx[int(rng.integers(len(idx)))])
    p = np.array(anatomy.index_to_mm((i, j, k0 + k)))
    # local rib direction: principal axis of rib voxels within 14 mm
    box = SubBox(anatomy, p, 14.0)
    w = (box.take(anatomy.organ("ribs")) * (box.radius() < 14.0)).flatten()
    pts = torch.stack([t.flatten() for t in box.d], 1)
    m = (w[:, None] * pts).sum(0) / w.sum()
    cov = ((pts - m).T * w) @ (pts - m) / w.sum()
    axis = torch.linalg.eigh(cov)[1][:, -1].numpy().astype(float)
    axis /= np.linalg.norm(axis)
    # inward normal: towards the lung (medially), orthogonal to the rib axis
    inward = np.array([-sign, 0.0, 0.0])
    nrm = inward - axis * float(inward @ axis)
    nrm /= max(np.linalg.norm(nrm), 1e-6)
    return p, axis, nrm


def make_other_lesion(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                      zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """VinBigData "Other lesion": a healing rib fracture (fusiform bony callus around a lateral rib)
    or an extrapleural soft-tissue density bulging from a rib into the lung with obtuse margins."""
    check_choice(side, LUNG_SIDES, "side")
    check_choice(zone, LUNG_ZONES, "zone")
    size = severity_scale(severity, 0.7, 1.0, 1.35)
    side = pick(rng, side, LUNG_SIDES, "side")
    zone = pick(rng, zone, LUNG_ZONES, "zone")
    kind = "rib_callus" if rng.random() < 0.5 else "extrapleural"
    p, axis, normal = _rib_site(anatomy, rng, side, zone)
    vox = min(anatomy.spacing_mm)
    third = np.cross(axis, normal)
    if kind == "rib_callus":
        a_len, a_across = 12.0 * size * float(rng.uniform(0.85, 1.2)), 7.0 * size * float(rng.uniform(0.85, 1.15))
        box = SubBox(anatomy, p, a_len + 3 * vox)
        u = [sum(box.d[i] * float(v[i]) for i in range(3)) for v in (axis, normal, third)]
        r = torch.sqrt((u[0] / a_len) ** 2 + (u[1] / a_across) ** 2 + (u[2] / a_across) ** 2)
        n = smooth_noise(rng, box.shape, 3.0, box.spacing_mm)
        occ = soft_step((1.0 + 0.1 * n - r) * a_across, vox)
        target = MU_CALCIUM * float(rng.uniform(0.85, 1.0)) * (1 + 0.1 * n)  # woven bone
        delta = occ * (target - box.take(anatomy.mu)).clamp_min(0.0)
        attrs = {"kind": kind, "length_mm": 2 * a_len}
    else:
        a_t, a_n = 17.0 * size * float(rng.uniform(0.85, 1.2)), 11.0 * size * float(rng.uniform(0.85, 1.2))
        lung_s = anatomy.organ(f"lung_{side}")
        c = p
        for step in range(25):  # the pleural surface: first point along the inward normal inside the lung
            c = p + normal * float(step)
            ijk = [min(max(int(round(v)), 0), n - 1) for v, n in zip(anatomy.mm_to_index(c), anatomy.shape)]
            if float(lung_s[ijk[0], ijk[1], ijk[2]]) >= 0.5:
                break
        box = SubBox(anatomy, c, a_t + 3 * vox)
        u = [sum(box.d[i] * float(v[i]) for i in range(3)) for v in (axis, normal, third)]
        r = torch.sqrt((u[0] / a_t) ** 2 + (u[1] / a_n) ** 2 + (u[2] / (0.8 * a_t)) ** 2)
        n = smooth_noise(rng, box.shape, 4.0, box.spacing_mm)
        occ = soft_step((1.0 + 0.06 * n - r) * a_n, vox)
        bone = (box.take(anatomy.organ("ribs")) + box.take(anatomy.organ("spine"))).clamp(0, 1)
        delta = occ * (1 - bone) * (MU_WATER * 1.03 - box.take(anatomy.mu)).clamp_min(0.0)
        attrs = {"kind": kind, "diameter_mm": 2 * a_t}
    return [_lesion("other_lesion", delta, box, side, zone, severity, center_mm=tuple(float(v) for v in p), **attrs)]


SPECS = [
    FindingSpec("nodule", make_nodule, LUNG_SIDES, LUNG_ZONES,
                "round, well-defined soft-tissue nodule in the lung, 5-30 mm, slightly lobulated"),
    FindingSpec("mass", make_mass, LUNG_SIDES, LUNG_ZONES,
                "lung mass > 3 cm, lobulated or spiculated, may abut the pleura or hilum"),
    FindingSpec("calcified_granuloma", make_calcified_granuloma, LUNG_SIDES, LUNG_ZONES,
                "one or a few small (3-8 mm) dense, sharp calcified lung nodules"),
    FindingSpec("calcification", make_calcification, ("midline", "left", "right"), ("upper", "middle"),
                "aortic arch (knob) wall calcification (upper, midline/left) or a calcified hilar (middle) or "
                "right paratracheal (upper, right) lymph node"),
    FindingSpec("lung_opacity", make_lung_opacity, LUNG_SIDES, LUNG_ZONES,
                "nonspecific ill-defined round-ish lung opacity (VinBigData 'Lung Opacity')"),
    FindingSpec("other_lesion", make_other_lesion, LUNG_SIDES, LUNG_ZONES,
                "rib fracture callus or extrapleural soft-tissue density at a rib (VinBigData 'Other lesion')"),
]
