"""Shared pieces of the 3D findings: the finding signature, lung zones, cropping, boxes.

Every finding is a function ``make(anatomy, rng, *, side=None, zone=None, severity="moderate") ->
list[Lesion]`` (see :mod:`refers_lite.data.synthesis.anatomy`): it changes attenuation where the finding
is, guided by the patient's organ occupancy, and draws everything random from ``rng`` (a
``numpy.random.Generator``) so that a seed reproduces it.  ``side=None`` / ``zone=None`` let the
finding choose (typical sides/zones of that finding); an impossible request raises ValueError.

Attenuation per mm at radiograph energies (``hu_to_mu``: 0.02 * (1 + HU / 1000)):
air 0, aerated lung ~0.003-0.004, fluid / soft tissue ~0.02, fat ~0.018, calcium / bone ~0.03-0.05.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..anatomy import ORGAN_GROUPS, Anatomy, Lesion

__all__ = ["MU_AIR", "MU_WATER", "MU_FAT", "MU_CALCIUM", "MU_METAL", "SIDES", "ZONES", "SEVERITIES",
           "FindingSpec", "lung_zone", "crop_lesion", "box_from_projection", "severity_scale", "pick", "organ_bbox",
           "organ_crop"]

MU_AIR, MU_FAT, MU_WATER, MU_CALCIUM, MU_METAL = 0.0, 0.018, 0.02, 0.045, 0.2
SIDES = ("left", "right", "bilateral", "midline")
ZONES = ("upper", "middle", "lower", "diffuse")
SEVERITIES = ("mild", "moderate", "severe")


@dataclass(frozen=True)
class FindingSpec:
    """A registered finding: its maker, the sides and zones it accepts, and a one-line description."""

    name: str
    make: Callable[..., list[Lesion]]
    sides: tuple[str, ...]
    zones: tuple[str, ...]
    description: str


def severity_scale(severity: str, mild: float, moderate: float, severe: float) -> float:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return {"mild": mild, "moderate": moderate, "severe": severe}[severity]


def pick(rng: np.random.Generator, value: str | None, options: Sequence[str], what: str) -> str:
    """``value`` if given (checked against ``options``), else a random choice of ``options``."""
    if value is None:
        return str(options[int(rng.integers(len(options)))])
    if value not in options:
        raise ValueError(f"{what} must be one of {tuple(options)}, got {value!r}")
    return value


def organ_bbox(anatomy: Anatomy, name: str, threshold: float = 0.5) -> tuple[tuple[int, int], ...]:
    """``anatomy.bbox_index(name, threshold)``, memoised on the anatomy (organs do not change once a
    patient is drawn), from the organ's per-axis occupancy maxima (computed once per organ, for every
    threshold; ~10x faster than ``any`` on the mask)."""
    key = f"findings.bbox:{name}:{threshold}"
    if key not in anatomy._cache:
        pkey = f"findings.profiles:{name}"
        if pkey not in anatomy._cache:
            if name in ORGAN_GROUPS and name not in anatomy.organs:
                # a union: only where one of its organs is present (its occupancy is 0 elsewhere)
                boxes = [organ_bbox(anatomy, n, 1e-30) for n in ORGAN_GROUPS[name]]
                lo = [min(b[ax][0] for b in boxes) for ax in range(3)]
                sl = tuple(slice(lo[ax], max(b[ax][1] for b in boxes)) for ax in range(3))
                occ = torch.zeros(anatomy.shape)
                occ[sl] = organ_crop(anatomy, name, sl)
            else:
                occ = anatomy.organ(name)
            a = occ.amax(0)
            anatomy._cache[pkey] = (occ.reshape(occ.shape[0], -1).amax(1), a.amax(1), a.amax(0))
        out = []
        for p in anatomy._cache[pkey]:
            hit = torch.nonzero(p >= threshold).flatten()
            if hit.numel() == 0:
                raise ValueError(f"organ {name!r} is empty in this anatomy")
            out.append((int(hit[0]), int(hit[-1]) + 1))
        anatomy._cache[key] = tuple(out)
    return anatomy._cache[key]


def organ_crop(anatomy: Anatomy, name: str, sl: tuple[slice, ...]) -> torch.Tensor:
    """``anatomy.organ(name)[sl]`` without building a union's whole grid: the union of
    ``ORGAN_GROUPS[name]`` summed on the crop only (the same sum, in the same order, as
    ``Anatomy.organ``'s).  For small crops of rarely used unions (e.g. "lung")."""
    if name in anatomy.organs or name not in ORGAN_GROUPS:
        return anatomy.organ(name)[sl]
    names = ORGAN_GROUPS[name]
    out = anatomy.organs[names[0]][sl].clone()
    for n in names[1:]:
        out += anatomy.organs[n][sl]
    return out.clamp_(0, 1)


def lung_zone(anatomy: Anatomy, side: str, zone: str) -> torch.Tensor:
    """Lung occupancy (X, Y, Z) restricted to a side and a zone.

    ``side``: "left" | "right" | "bilateral".  ``zone``: "upper" | "middle" | "lower" (thirds of
    that lung's cranio-caudal extent, computed per lung) | "diffuse" (the whole lung).
    """
    if side == "bilateral":
        return (lung_zone(anatomy, "left", zone) + lung_zone(anatomy, "right", zone)).clamp(0, 1)
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left', 'right' or 'bilateral', got {side!r}")
    occ = anatomy.organ(f"lung_{side}")
    if zone == "diffuse":
        return occ
    if zone not in ("upper", "middle", "lower"):
        raise ValueError(f"zone must be one of {ZONES}, got {zone!r}")
    (_, _), (_, _), (k0, k1) = organ_bbox(anatomy, f"lung_{side}")
    cut = np.linspace(k0, k1, 4).round().astype(int)  # lower third first (z grows superior)
    lo, hi = {"lower": (cut[0], cut[1]), "middle": (cut[1], cut[2]), "upper": (cut[2], cut[3])}[zone]
    out = torch.zeros_like(occ)
    out[:, :, lo:hi] = occ[:, :, lo:hi]
    return out


def crop_lesion(finding: str, delta_mu: torch.Tensor, *, side: str, zone: str, severity: str,
                origin: Sequence[int] = (0, 0, 0), margin: int = 1, eps: float = 1e-6, **attrs) -> Lesion:
    """A :class:`Lesion` from a change of attenuation, cropped to where ``|delta_mu| > eps`` (+ margin).

    ``delta_mu`` is defined on a sub-box of the anatomy grid starting at voxel ``origin``
    (default: the whole grid).  Raises ValueError if the change is empty.
    """
    # the box from per-axis maxima of |delta| (torch.nonzero over the volume is ~10x slower)
    mag = delta_mu.abs()
    a = mag.amax(0) if mag.numel() else None
    if a is None or not float(a.max()) > eps:
        raise ValueError(f"finding {finding!r} ({side}, {zone}, {severity}) changed no voxel")
    lo, hi = [], []
    for ax, p in enumerate((mag.reshape(mag.shape[0], -1).amax(1), a.amax(1), a.amax(0))):
        hit = torch.nonzero(p > eps).flatten()
        lo.append(max(int(hit[0]) - margin, 0))
        hi.append(min(int(hit[-1]) + 1 + margin, delta_mu.shape[ax]))
    crop = delta_mu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].contiguous()
    org = tuple(int(o) + int(l) for o, l in zip(origin, lo))
    return Lesion(finding, crop, org, side=side, zone=zone, severity=severity, attrs=dict(attrs))  # type: ignore


def box_from_projection(delta_li: torch.Tensor, frac: float = 0.15, min_abs: float = 1e-3):
    """Pixel box ``(x0, y0, x1, y1)`` (x = column, y = row, x1/y1 exclusive) where a lesion's line
    integrals reach ``frac`` of their peak magnitude (and at least ``min_abs``); None if nowhere."""
    mag = delta_li.abs()
    peak = float(mag.max()) if mag.numel() else 0.0
    if peak < min_abs:
        return None
    m = mag >= max(frac * peak, min_abs)
    rows = torch.nonzero(m.any(1)).flatten()
    cols = torch.nonzero(m.any(0)).flatten()
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1
