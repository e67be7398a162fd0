"""Pleural findings in 3D: effusion, pneumothorax, pleural thickening.

Each works on a sub-box around one hemithorax (the lung's bounding box plus a margin) and
replaces attenuation where the finding is:

* ``pleural_effusion``: dependent fluid (water, 0.02 / mm) replaces the lowest lung: below a
  level that rises along the costal (lateral, anterior, posterior) chest wall by a rim that
  fades over ~1 cm (the meniscus; fluid climbs the wall) and a little higher posteriorly
  (the posterior recess fills first).  Mild: the recesses (blunted costophrenic angles);
  severe: up to about mid-hemithorax.
* ``pneumothorax``: the lung retracts from the apex and the lateral chest wall towards the
  hilum (a backward-mapped anisotropic shrink of the lung and its vessels, so the collapsed
  lung keeps its markings); pleural air (0) fills the rim, the retracted lung is slightly
  denser (mass kept in part) and its edge carries a thin visceral pleural line.
* ``pleural_thickening``: a smooth band of soft tissue, a few mm thick, along the lateral costal
  surface of the lung (not the mediastinal or diaphragmatic one) in a zone; "upper" is an
  apical cap.

The helpers here (sub-boxes, band-limited noise, costal distance, tubes and discs) are shared
with :mod:`.parenchyma`.
"""
from __future__ import annotations

import math
import weakref
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..anatomy import Anatomy, Lesion
from .base import MU_AIR, MU_WATER, FindingSpec, crop_lesion, organ_bbox, pick, severity_scale
from .resample import gaussian_weights, interpolated_moments, resize_weights, separable

__all__ = ["SPECS", "pleural_effusion", "pneumothorax", "pleural_thickening", "SubBox", "Coarse"]


# ----------------------------------------------------------------------------- shared helpers
class SubBox:
    """A box of voxels ``[lo, hi)`` of an anatomy grid: slices, origin and mm coordinates.

    It refers to its anatomy weakly: boxes are kept in the anatomy's own cache, and a strong reference
    would make a cycle that keeps a dropped patient in memory until a full garbage collection."""

    def __init__(self, anatomy: Anatomy, lo: Sequence[int], hi: Sequence[int]):
        self._anatomy = weakref.ref(anatomy)
        self.lo = tuple(max(0, int(a)) for a in lo)
        self.hi = tuple(min(n, int(b)) for b, n in zip(hi, anatomy.shape))
        self.sl = tuple(slice(a, b) for a, b in zip(self.lo, self.hi))
        self.shape = tuple(b - a for a, b in zip(self.lo, self.hi))
        sp, full = anatomy.spacing_mm, anatomy.shape
        self.axes = [((torch.arange(a, b, dtype=torch.float32) + 0.5) * s - n * s / 2)
                     for a, b, s, n in zip(self.lo, self.hi, sp, full)]

    @property
    def anatomy(self) -> Anatomy:
        anatomy = self._anatomy()
        if anatomy is None:
            raise ReferenceError("the anatomy of this box no longer exists")
        return anatomy

    @property
    def origin(self) -> tuple[int, int, int]:
        return self.lo  # type: ignore[return-value]

    def take(self, vol: torch.Tensor) -> torch.Tensor:
        return vol[self.sl]

    def organ(self, name: str) -> torch.Tensor:
        return self.anatomy.organ(name)[self.sl]

    @property
    def mu(self) -> torch.Tensor:
        return self.anatomy.mu[self.sl]

    def grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, y, z) mm of every voxel of the box, each broadcastable to ``shape``."""
        x, y, z = self.axes
        return x[:, None, None], y[None, :, None], z[None, None, :]


def organ_box(anatomy: Anatomy, names: Sequence[str], pad: int = 3, threshold: float = 0.05) -> SubBox:
    """Sub-box around the union of organs (occupancy >= threshold), padded by ``pad`` voxels."""
    lo = [10**9] * 3
    hi = [-1] * 3
    for name in names:
        for ax, (a, b) in enumerate(organ_bbox(anatomy, name, threshold)):
            lo[ax], hi[ax] = min(lo[ax], a), max(hi[ax], b)
    return SubBox(anatomy, [a - pad for a in lo], [b + pad for b in hi])


class Coarse:
    """A 2x coarser grid over a :class:`SubBox` for smooth fields: compute there, :meth:`up` to the box.

    Coarse voxel ``i`` covers fine voxels ``2i, 2i + 1`` (the box is padded by one voxel where odd),
    so trilinear upsampling by 2 with ``align_corners=False`` puts values back in place."""

    def __init__(self, box: SubBox):
        self.box = box
        self.axes = []
        for a in box.axes:
            if a.numel() % 2:
                step = float(a[1] - a[0]) if a.numel() > 1 else 1.0
                a = torch.cat([a, a[-1:] + step])
            self.axes.append(0.5 * (a[0::2] + a[1::2]))
        self.shape = tuple(a.numel() for a in self.axes)
        self.spacing_mm = tuple(2.0 * s for s in box.anatomy.spacing_mm)

    def grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y, z = self.axes
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def pool(self, vol: torch.Tensor) -> torch.Tensor:
        pad = [0, vol.shape[2] % 2, 0, vol.shape[1] % 2, 0, vol.shape[0] % 2]
        v = F.pad(vol[None, None], pad, mode="replicate") if any(pad) else vol[None, None]
        return F.avg_pool3d(v, 2)[0, 0]

    def up(self, vol_c: torch.Tensor) -> torch.Tensor:
        """Trilinear x2 (``align_corners=False``) cut to the box: separable, see :mod:`.resample`."""
        return separable(vol_c, *(resize_weights(c, 2 * c, False)[:n] for c, n in zip(vol_c.shape, self.box.shape)))


def lung_extent_mm(anatomy: Anatomy, side: str, threshold: float = 0.5) -> dict[str, float]:
    """Extent of one lung in mm: x (lo, hi), y (lo, hi), z (lo, hi) voxel-centre coordinates."""
    key = f"lungfindings:extent:{side}:{threshold}"
    if key not in anatomy._cache:
        (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, f"lung_{side}", threshold)
        lo = anatomy.index_to_mm((i0, j0, k0))
        hi = anatomy.index_to_mm((i1 - 1, j1 - 1, k1 - 1))
        anatomy._cache[key] = {"x0": lo[0], "x1": hi[0], "y0": lo[1], "y1": hi[1], "z0": lo[2], "z1": hi[2]}
    return anatomy._cache[key]


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], scale_mm: float,
                 spacing_mm: Sequence[float]) -> torch.Tensor:
    """Band-limited gaussian random field on ``shape``, zero mean, unit std, correlation ~``scale_mm``.

    White noise on a coarse grid (one node per ``scale_mm``), lightly smoothed and upsampled
    trilinearly: cheap, smooth and drawn from ``rng`` only.
    """
    coarse = [max(2, int(math.ceil(n * s / scale_mm)) + 1) for n, s in zip(shape, spacing_mm)]
    white = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))
    # gaussian_filter(sigma 0.6, mode="wrap") then trilinear (align_corners=True): one matrix per axis
    # (see .resample); both keep constants (rows sum to 1), so normalise before upsampling
    ws = [resize_weights(c, int(n), True) @ gaussian_weights(c, 0.6, "wrap") for c, n in zip(coarse, shape)]
    mean, std = interpolated_moments(white, ws)
    return separable((white - mean) / max(std, 1e-6), *ws)


def costal_distance_mm(lung: torch.Tensor, side: str, spacing_mm: Sequence[float],
                       medial: bool = True, below: bool = True) -> torch.Tensor:
    """Distance (mm) from each voxel of a lung (occupancy >= 0.5, on a sub-box) to its *costal*
    surface: the mediastinal (``medial``) and diaphragmatic (``below``) surfaces are closed off
    first (everything medial to / below lung on the same row / column counts as inside), so only
    the lateral, anterior, posterior and apical chest wall remain.  0 outside the lung.

    A fast chamfer distance (mean of the city-block and chessboard distances, within ~15 % of
    the euclidean one) in units of the mean voxel spacing: ~4x faster than the exact transform."""
    from scipy.ndimage import distance_transform_cdt

    m = (lung >= 0.5).numpy()
    closed = m.copy()
    if medial:  # left lung: medial is lower x; right lung: medial is higher x
        if side == "left":
            closed |= np.flip(np.maximum.accumulate(np.flip(m, 0), 0), 0)
        else:
            closed |= np.maximum.accumulate(m, 0)
    if below:  # lung at a higher z on the same column
        closed |= np.flip(np.maximum.accumulate(np.flip(m, 2), 2), 2)
    d = (distance_transform_cdt(closed, "taxicab").astype(np.float32)
         + distance_transform_cdt(closed, "chessboard").astype(np.float32)) * (0.5 * float(np.mean(spacing_mm)))
    return torch.from_numpy(d * m)


def lung_side(anatomy: Anatomy, side: str) -> dict:
    """One lung's working set, once per patient: its ``box`` (:func:`organ_box`, pad 2), ``lung``
    occupancy and ``mu`` there, the ``coarse`` grid and the pooled lung ``lung_c`` on it, and
    ``to_water`` = lung * (MU_WATER - mu) (the change where the lung part becomes water)."""
    key = f"lungfindings:side:{side}"
    if key not in anatomy._cache:
        box = organ_box(anatomy, [f"lung_{side}"], pad=2)
        lung, mu = box.organ(f"lung_{side}"), box.mu
        cg = Coarse(box)
        anatomy._cache[key] = {"box": box, "lung": lung, "mu": mu, "coarse": cg, "lung_c": cg.pool(lung),
                               "to_water": lung * (MU_WATER - mu)}
    return anatomy._cache[key]


def coarse_costal_distance(anatomy: Anatomy, side: str, box: SubBox, below: bool = True):
    """(coarse grid, pooled lung, :func:`costal_distance_mm` on it) of lung ``side`` on ``box``, memoised."""
    key = f"lungfindings:costal:{side}:{box.lo}:{box.hi}:{below}"
    if key not in anatomy._cache:
        cg = Coarse(box)
        lung_c = cg.pool(box.organ(f"lung_{side}"))
        anatomy._cache[key] = (cg, lung_c, costal_distance_mm(lung_c, side, cg.spacing_mm, below=below))
    return anatomy._cache[key]


def sigmoid(t: torch.Tensor | float) -> torch.Tensor:
    return torch.sigmoid(torch.as_tensor(t, dtype=torch.float32))


def _local(box: SubBox, lo: Sequence[float], hi: Sequence[float]):
    """Index slices of the box voxels whose centres lie in [lo, hi] (mm) and their numpy coordinates,
    or None if empty (the box axes are uniform)."""
    steps = box.__dict__.get("_steps")  # (n, first centre, step) per axis, as Python numbers, once per box
    if steps is None:
        steps = box._steps = [(a.numel(), float(a[0]), float(a[1] - a[0]) if a.numel() > 1 else 1.0)
                              for a in box.axes]
    sl, co = [], []
    for ax, (n, a0, step) in enumerate(steps):
        i0 = max(0, int(math.ceil((lo[ax] - a0) / step)))
        i1 = min(n, int(math.floor((hi[ax] - a0) / step)) + 1)
        if i1 <= i0:
            return None
        sl.append(slice(i0, i1))
        co.append(a0 + step * np.arange(i0, i1, dtype=np.float32))
    return tuple(sl), (co[0][:, None, None], co[1][None, :, None], co[2][None, None, :])


def _paint_max(vol: torch.Tensor, sl, w: np.ndarray) -> None:
    v = vol[sl]
    torch.maximum(v, torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)), out=v)


def _sig(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def tube(vol: torch.Tensor, box: SubBox, p0: Sequence[float], p1: Sequence[float], r0: float, r1: float,
         value: float = 1.0, lumen: float = 0.0) -> None:
    """Paint (max) a soft-edged tube from ``p0`` to ``p1`` (mm, patient frame), radius ``r0`` -> ``r1``
    (mm), into ``vol`` (the box's shape), touching only the tube's own bounding box.  ``lumen`` > 0
    paints only the wall: the inner ``lumen`` fraction of the radius is left out (a cuffed bronchus)."""
    a = np.asarray(p0, dtype=np.float64)
    b = np.asarray(p1, dtype=np.float64)
    r = max(r0, r1) + 2.5
    loc = _local(box, np.minimum(a, b) - r, np.maximum(a, b) + r)
    if loc is None:
        return
    sl, (x, y, z) = loc
    d = b - a
    L2 = max(float(d @ d), 1e-6)
    (ax, ay, az), (dx, dy, dz) = (float(v) for v in a), (float(v) for v in d)
    x, y, z = x - ax, y - ay, z - az  # float32 from here on (Python scalars keep the arrays' type)
    t = x * dx + y * dy + z * dz
    t /= L2
    np.clip(t, 0.0, 1.0, out=t)
    acc = x - t * dx
    acc *= acc
    for c, dc in ((y, dy), (z, dz)):
        e = c - t * dc
        e *= e
        acc += e
    dist = np.sqrt(acc, out=acc)
    rad = r0 + (r1 - r0) * t
    w = _sig((rad - dist) / 0.6)
    if lumen > 0:
        w -= _sig((lumen * rad - dist) / 0.6)
    if value != 1.0:
        w *= value
    _paint_max(vol, sl, w)


def disc(vol: torch.Tensor, box: SubBox, c: Sequence[float], normal: Sequence[float], radius: float,
         thickness: float, value: float = 1.0, edge_mm: float = 2.0) -> None:
    """Paint (max) a soft disc (centre ``c`` mm, unit ``normal``, ``radius`` and ``thickness`` mm)."""
    ct = np.asarray(c, dtype=np.float64)
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    r = radius + edge_mm * 2 + thickness
    loc = _local(box, ct - r, ct + r)
    if loc is None:
        return
    sl, (x, y, z) = loc
    x, y, z = x - float(ct[0]), y - float(ct[1]), z - float(ct[2])  # float32 (Python scalars keep the type)
    h = x * float(n[0]) + y * float(n[1]) + z * float(n[2])
    rho = np.sqrt(np.maximum(x * x + y * y + z * z - h * h, 0.0))
    w = _sig((thickness / 2 - np.abs(h)) / 0.5) * _sig((radius - rho) / edge_mm)
    if value != 1.0:
        w *= value
    _paint_max(vol, sl, w)


def zone_weight(z: torch.Tensor, ext: dict[str, float], zone: str, soft_mm: float = 8.0) -> torch.Tensor:
    """Soft cranio-caudal window (thirds of the lung's height) for a zone; 1 for "diffuse"."""
    if zone == "diffuse":
        return torch.ones_like(z)
    z0, z1 = ext["z0"], ext["z1"]
    cuts = [z0 + (z1 - z0) * f for f in (0.0, 1 / 3, 2 / 3, 1.0)]
    lo, hi = {"lower": (cuts[0] - 50, cuts[1]), "middle": (cuts[1], cuts[2]), "upper": (cuts[2], cuts[3] + 50)}[zone]
    return sigmoid((z - lo) / soft_mm) * sigmoid((hi - z) / soft_mm)


def one_side(side: str) -> list[str]:
    return ["left", "right"] if side == "bilateral" else [side]


def check_lung(anatomy: Anatomy, side: str) -> None:
    """ValueError if the anatomy has no lung on that side (cheap: the cached lung extent)."""
    lung_extent_mm(anatomy, side)  # organ_bbox raises ValueError for an empty organ


# ----------------------------------------------------------------------------- pleural effusion
_EFFUSION_SIDES = ("left", "right", "bilateral")
_EFFUSION_ZONES = ("lower",)


def wall_distance_mm(lung: torch.Tensor, side: str, spacing_mm: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per voxel of a sub-box: distance (mm) to the lung's lateral edge along its x row and to its
    posterior edge along its y column (lung = occupancy >= 0.5); large where the row / column has
    no lung.  Cheap stand-ins for the distance to the lateral and posterior chest wall."""
    m = (lung >= 0.5).numpy()
    X, Y, _ = m.shape
    i = np.arange(X, dtype=np.float32)[:, None, None]
    j = np.arange(Y, dtype=np.float32)[None, :, None]
    if side == "left":  # lateral = high x
        edge = (X - 1 - np.argmax(m[::-1], axis=0)).astype(np.float32)[None]
        dx = (edge - i) * spacing_mm[0]
    else:
        edge = np.argmax(m, axis=0).astype(np.float32)[None]
        dx = (i - edge) * spacing_mm[0]
    dx = np.where(m.any(0)[None], np.maximum(dx, 0.0), 1e4)
    post = np.argmax(m, axis=1).astype(np.float32)[:, None]
    dy = np.where(m.any(1)[:, None], np.maximum((j - post) * spacing_mm[1], 0.0), 1e4)
    return torch.from_numpy(dx.astype(np.float32)), torch.from_numpy(dy.astype(np.float32))


def _wall_distances(anatomy: Anatomy, side: str) -> tuple[SubBox, tuple[torch.Tensor, torch.Tensor]]:
    """The lung's box and :func:`wall_distance_mm` on it, once per patient."""
    key = f"lungfindings:wall_distance:{side}"
    if key not in anatomy._cache:
        box = organ_box(anatomy, [f"lung_{side}"], pad=2)
        anatomy._cache[key] = (box, wall_distance_mm(box.organ(f"lung_{side}"), side, anatomy.spacing_mm))
    return anatomy._cache[key]


def pleural_effusion(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                     zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """Dependent pleural fluid with a meniscus; bilateral gives one lesion per side."""
    side = pick(rng, side, _EFFUSION_SIDES, "side")
    zone = pick(rng, zone, _EFFUSION_ZONES, "zone")
    frac = severity_scale(severity, 0.06, 0.18, 0.36)  # level at the lung's centre, fraction of its height
    rise = severity_scale(severity, 26.0, 40.0, 50.0)  # meniscus: how far fluid climbs the lateral wall (mm)
    reach = severity_scale(severity, 20.0, 30.0, 40.0)  # over how far from the wall the meniscus falls (mm)
    out = []
    for s in one_side(side):
        check_lung(anatomy, s)
        ext = lung_extent_mm(anatomy, s)
        height = ext["z1"] - ext["z0"]
        level = ext["z0"] + height * frac * float(rng.uniform(0.9, 1.1))
        r_lat = rise * float(rng.uniform(0.85, 1.15))
        top = level + 1.5 * r_lat + 15.0
        full, (dx_full, dy_full) = _wall_distances(anatomy, s)
        k_top = int(math.ceil(anatomy.mm_to_index((0, 0, top))[2])) + 2
        box = SubBox(anatomy, full.lo, (full.hi[0], full.hi[1], min(full.hi[2], k_top)))
        lung = box.organ(f"lung_{s}")
        x, y, z = box.grid()
        k = box.shape[2]  # (per row / column of each z slice: the box's slab of the full box's distances)
        dx, dy = dx_full[:, :, :k], dy_full[:, :, :k]
        # the fluid surface: a level, climbing the lateral wall (meniscus) and, half as much, the
        # posterior wall (the posterior recess fills first), with a little irregularity
        surf = torch.div(dx, -reach).exp_().mul_(r_lat).add_(level)
        surf += torch.div(dy, -reach).exp_().mul_(0.6 * r_lat)
        surf += 2.0 * smooth_noise(rng, box.shape, 30.0, anatomy.spacing_mm)
        w = sigmoid(surf.sub_(z).div_(1.5)).mul_(lung)
        delta = w * (MU_WATER - box.mu)
        out.append(crop_lesion("pleural_effusion", delta, side=s, zone=zone, severity=severity, origin=box.origin,
                               level_mm=float(level), bilateral=side == "bilateral"))
    return out


# ----------------------------------------------------------------------------- pneumothorax
_PTX_SIDES = ("left", "right")
_PTX_ZONES = ("upper", "diffuse")


def pneumothorax(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                 zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """Pleural air: the lung (with its vessels) shrinks towards the hilum, away from the apex and
    the lateral wall; "upper" keeps the rim apical, "diffuse" runs it down the lateral wall."""
    side = pick(rng, side, _PTX_SIDES, "side")
    zone = pick(rng, zone, _PTX_ZONES, "zone")
    check_lung(anatomy, side)
    apex = severity_scale(severity, 14.0, 30.0, 55.0) * float(rng.uniform(0.85, 1.15))  # rim at the apex (mm)
    lat = severity_scale(severity, 7.0, 16.0, 34.0) * float(rng.uniform(0.85, 1.15))  # rim at the lateral wall
    box = organ_box(anatomy, [f"lung_{side}"], pad=2)
    lung = box.organ(f"lung_{side}")
    ext = lung_extent_mm(anatomy, side)
    sgn = 1.0 if side == "left" else -1.0  # + x is lateral for the left lung
    x_med, x_lat = (ext["x0"], ext["x1"]) if side == "left" else (ext["x1"], ext["x0"])
    height = ext["z1"] - ext["z0"]
    # anchor (hilum): medial, mid-depth, low third of the lung (so the base moves little)
    a = (x_med + sgn * 0.15 * abs(x_lat - x_med), 0.5 * (ext["y0"] + ext["y1"]), ext["z0"] + 0.35 * height)
    # work on the lung's voxels only (about half of the box)
    mu = box.mu
    idx = torch.nonzero(lung > 1e-3)
    x, y, z = (box.axes[ax][idx[:, ax]] for ax in range(3))
    zt = ((z - a[2]) / max(ext["z1"] - a[2], 1.0)).clamp(0, 1)  # 0 at the hilum level, 1 at the apex
    lat_profile = torch.ones_like(zt) if zone == "diffuse" else sigmoid((zt - 0.45) / 0.1)
    half_w = abs(x_lat - a[0])
    half_d = 0.5 * (ext["y1"] - ext["y0"])
    sx = 1.0 - lat * lat_profile / half_w
    sy = 1.0 - 0.8 * lat * lat_profile / half_d
    sz_up = 1.0 - apex / max(ext["z1"] - a[2], 1.0)
    sz_dn = 1.0 - (0.1 * lat if zone == "diffuse" else 0.0) / max(a[2] - ext["z0"], 1.0)
    sz = torch.where(z >= a[2], sz_up, sz_dn)
    # backward map: the retracted lung at p shows the original lung at a + (p - a) / s
    q = (a[0] + (x - a[0]) / sx, a[1] + (y - a[1]) / sy, a[2] + (z - a[2]) / sz)
    norm = []
    for qa, ax in zip(q, box.axes):
        step = float(ax[1] - ax[0])
        norm.append((qa - (float(ax[0]) - step / 2)) / (ax.numel() * step) * 2 - 1)  # align_corners=False
    grid = torch.stack([norm[2], norm[1], norm[0]], -1).view(1, -1, 1, 1, 3)  # (W=z, H=y, D=x) order
    lung_v = lung[idx[:, 0], idx[:, 1], idx[:, 2]]
    # the lung part of each voxel (partial voxels at the chest wall keep their tissue)
    lung_part = torch.where(lung > 0.9, mu, mu.clamp(max=0.006))
    src = torch.stack([lung, lung_part * lung])[None]
    samp = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, :, :, 0, 0]
    ls, lung_mu_s = samp[0], samp[1]
    vol_ratio = float(lung_v.sum()) / max(float(ls.sum()), 1.0)
    dens = 1.0 + 0.5 * (vol_ratio - 1.0)  # the collapsed lung is denser (part of its mass kept)
    line = 4.0 * ls * (1.0 - ls) * ((lung_v - 0.9) / 0.1).clamp(0, 1)  # visceral pleura where the lung retracted
    new_lung = dens * lung_mu_s + 0.011 * line
    delta = torch.zeros(box.shape)
    lp_v = lung_part[idx[:, 0], idx[:, 1], idx[:, 2]]
    dv = lung_v * (MU_AIR - lp_v) + torch.minimum(new_lung, lung_v * MU_WATER * 1.2)
    # nothing becomes denser than ~water (compressed vessels moving into a rib's partial voxel)
    mu_v = mu[idx[:, 0], idx[:, 1], idx[:, 2]]
    delta[idx[:, 0], idx[:, 1], idx[:, 2]] = torch.minimum(dv, (MU_WATER * 1.2 - mu_v).clamp_min(0.0))
    return [crop_lesion("pneumothorax", delta, side=side, zone=zone, severity=severity, origin=box.origin,
                        apical_rim_mm=float(apex), lateral_rim_mm=float(lat if zone == "diffuse" else 0.0))]


# ----------------------------------------------------------------------------- pleural thickening
_THICK_SIDES = ("left", "right", "bilateral")
_THICK_ZONES = ("upper", "middle", "lower", "diffuse")


def _thickening_anatomy(anatomy: Anatomy, s: str, zone: str) -> tuple[SubBox, torch.Tensor, torch.Tensor]:
    """Pleural thickening of lung ``s`` in ``zone``, what does not depend on the draw (once per patient):
    the box (the zone's slab of the lung's box), the costal distance, and where the band goes (the
    lateral pleura or the apical cap, the zone, the lung) times the change to soft tissue."""
    key = f"lungfindings:thickening:{s}:{zone}"
    if key in anatomy._cache:
        return anatomy._cache[key]
    box = organ_box(anatomy, [f"lung_{s}"], pad=2)
    ext = lung_extent_mm(anatomy, s)
    if zone != "diffuse":  # only the zone's slab (+ the soft edge), a third of the work
        h = ext["z1"] - ext["z0"]
        lo_f, hi_f = {"lower": (-1.0, 1 / 3), "middle": (1 / 3, 2 / 3), "upper": (2 / 3, 2.0)}[zone]
        k0 = int(math.floor(anatomy.mm_to_index((0, 0, ext["z0"] + lo_f * h - 20.0))[2]))
        k1 = int(math.ceil(anatomy.mm_to_index((0, 0, ext["z0"] + hi_f * h + 20.0))[2])) + 1
        box = SubBox(anatomy, (box.lo[0], box.lo[1], max(box.lo[2], k0)), (box.hi[0], box.hi[1], min(box.hi[2], k1)))
    lung = box.organ(f"lung_{s}")
    x, y, z = box.grid()
    d = costal_distance_mm(lung, s, anatomy.spacing_mm)
    x_lat = ext["x1"] if s == "left" else ext["x0"]
    dlat = (x_lat - x) if s == "left" else (x - x_lat)  # mm medial of the lung's most lateral point
    # the lateral pleura (and, apically, the cap): within ~15 % of the lung width of its lateral edge
    lateral = torch.maximum(sigmoid((0.15 * (ext["x1"] - ext["x0"]) - dlat) / 4.0),
                            sigmoid((z - (ext["z1"] - 0.15 * (ext["z1"] - ext["z0"]))) / 4.0))
    where = lateral * zone_weight(z, ext, zone, soft_mm=4.0) * lung * (MU_WATER * 0.95 - box.mu)
    anatomy._cache[key] = (box, d, where)
    return anatomy._cache[key]


def pleural_thickening(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                       zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """A smooth soft-tissue band along the costal pleura; "upper" is an apical cap."""
    side = pick(rng, side, _THICK_SIDES, "side")
    zone = pick(rng, zone, _THICK_ZONES, "zone")
    thick = severity_scale(severity, 3.0, 5.5, 9.0)
    out = []
    for s in one_side(side):
        check_lung(anatomy, s)
        ext = lung_extent_mm(anatomy, s)
        box, d, where = _thickening_anatomy(anatomy, s, zone)
        _, _, z = box.grid()
        t = thick * (1.0 + 0.3 * smooth_noise(rng, box.shape, 25.0, anatomy.spacing_mm)).clamp_min(0.3)
        if zone == "upper":  # apical cap: thickest over the apex
            t = t * (0.5 + 1.6 * ((z - ext["z0"]) / (ext["z1"] - ext["z0"])).clamp(0, 1) ** 3)
        delta = sigmoid(t.sub_(d).div_(0.8)).mul_(where)
        out.append(crop_lesion("pleural_thickening", delta, side=s, zone=zone, severity=severity, origin=box.origin,
                               thickness_mm=float(thick), bilateral=side == "bilateral"))
    return out


SPECS = [
    FindingSpec("pleural_effusion", pleural_effusion, _EFFUSION_SIDES, _EFFUSION_ZONES,
                "dependent pleural fluid: meniscus, blunted costophrenic angles (posterior first)"),
    FindingSpec("pneumothorax", pneumothorax, _PTX_SIDES, _PTX_ZONES,
                "pleural air: the lung retracts from apex / lateral wall behind a thin visceral pleural line"),
    FindingSpec("pleural_thickening", pleural_thickening, _THICK_SIDES, _THICK_ZONES,
                "smooth soft-tissue band along the chest wall (apical cap in the upper zone)"),
]
