"""Mediastinal findings: cardiomegaly, aortic enlargement, hiatal hernia (see :mod:`.base`).

* Cardiomegaly: the heart mask is scaled about its centroid, piecewise along each half-axis (most
  to the left, then posteriorly and inferiorly), so the enlarged heart keeps its own contour; the
  shell between the old and the new heart gets heart density where it was lung or fat.  The
  scaling is solved so that the cardiothoracic ratio (maximal heart width over maximal inner
  thoracic width, on the masks) reaches a target: > 0.5 for moderate and severe.
* Aortic enlargement: the thoracic aorta grows outward by a distance map, more to the left
  (a prominent aortic knob and a bulging descending aorta), less to the right (ascending aorta).
* Hiatal hernia: a round retrocardiac sac above the oesophageal hiatus, fluid below an air-fluid
  level and gas above it, with a soft-tissue wall.
"""
from __future__ import annotations

import numpy as np
import torch

from ..anatomy import Anatomy, Lesion
from .base import MU_AIR, MU_WATER, FindingSpec, crop_lesion, severity_scale
from .focal import SubBox, check_choice, lobulated_ball, organ_bbox, organ_centroid, smooth_noise, soft_step
from .resample import linear_weights, separable

__all__ = ["SPECS", "make_cardiomegaly", "make_aortic_enlargement", "make_hiatal_hernia",
           "cardiothoracic_ratio"]


def _median_mu(anatomy: Anatomy, organ: str) -> float:
    key = f"findings.median_mu:{organ}"
    if key not in anatomy._cache:
        occ = anatomy.organ(organ)
        (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, organ)
        m = occ[i0:i1, j0:j1, k0:k1] > 0.9
        anatomy._cache[key] = float(anatomy.mu[i0:i1, j0:j1, k0:k1][m].median())
    return anatomy._cache[key]


def _bone(anatomy: Anatomy, box: SubBox) -> torch.Tensor:
    return sum(box.take(anatomy.organ(n)) for n in ("spine", "ribs", "clavicles")).clamp(0, 1)  # type: ignore[union-attr]


def _displaceable(mu: torch.Tensor) -> torch.Tensor:
    """Weight of tissue a growing organ pushes aside: aerated lung and fat (mu < ~0.019) fully,
    fading to 0 at soft tissue (liver, muscle: ~0.021)."""
    return ((0.0205 - mu) / 0.004).clamp(0.0, 1.0)


def _width_mm(anatomy: Anatomy, name: str) -> float:
    (i0, i1), _, _ = organ_bbox(anatomy, name)
    return (i1 - i0) * anatomy.spacing_mm[0]


def cardiothoracic_ratio(anatomy: Anatomy, heart: torch.Tensor | None = None,
                         origin: tuple[int, int, int] = (0, 0, 0)) -> float:
    """Maximal heart width over maximal thoracic (lung) width, from the masks' x extents
    (occupancy >= 0.5).  ``heart``: an occupancy on a sub-box at voxel ``origin`` that is added to
    the anatomy's heart (e.g. an enlarged heart)."""
    (i0, i1), _, _ = organ_bbox(anatomy, "heart")
    if heart is not None:
        hit = torch.nonzero((heart >= 0.5).any(dim=(1, 2))).flatten()
        if hit.numel():
            i0, i1 = min(i0, origin[0] + int(hit.min())), max(i1, origin[0] + int(hit.max()) + 1)
    return (i1 - i0) * anatomy.spacing_mm[0] / _width_mm(anatomy, "lung")


def _scaled_occupancy(box: SubBox, occ: torch.Tensor, scales: dict[str, float]) -> torch.Tensor:
    """``occ`` (on ``box``) scaled about the box centre, piecewise per half-axis: ``scales`` has keys
    '+x', '-x', '+y', '-y', '+z', '-z' (factors >= 1).

    A trilinear resampling (zeros outside the box) whose source coordinate along each axis depends
    on that axis only: separable, one small matrix of linear weights per axis (:mod:`.resample`)."""
    ws = []
    for ax, name in enumerate("xyz"):
        d = box.d[ax][tuple(slice(None) if a == ax else 0 for a in range(3))]  # the axis' offsets (n,)
        s = torch.where(d >= 0, torch.tensor(scales[f"+{name}"]), torch.tensor(scales[f"-{name}"]))
        first = float(box.d[ax][(0, 0, 0)])
        ws.append(linear_weights((d / s - first) / box.spacing_mm[ax], box.shape[ax], "zeros"))  # continuous index
    return separable(occ.float(), *ws)


def make_cardiomegaly(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                      zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """An enlarged heart (target cardiothoracic ratio, attribute ``ctr`` ~0.53-0.56 / 0.58-0.62 / 0.64-0.70, and at
    least 0.03 / 0.07 / 0.12 above the patient's own), growing mostly to the left and downwards."""
    check_choice(side, ("midline",), "side")
    check_choice(zone, ("diffuse",), "zone")
    lo, hi, min_gain = severity_scale(severity, (0.53, 0.56, 0.03), (0.58, 0.62, 0.07), (0.64, 0.70, 0.12))  # type: ignore[misc]
    heart = anatomy.organ("heart")
    thorax = _width_mm(anatomy, "lung")
    (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, "heart")
    c = organ_centroid(anatomy, "heart")
    x_lo, x_hi = anatomy.index_to_mm((i0, 0, 0))[0], anatomy.index_to_mm((i1 - 1, 0, 0))[0]
    left, right = x_hi - c[0], c[0] - x_lo
    w0 = _width_mm(anatomy, "heart")
    ctr0 = w0 / thorax
    target = max(float(rng.uniform(lo, hi)), ctr0 + min_gain)
    r_share = float(rng.uniform(0.3, 0.5))  # right heart border moves less than the left
    k = (target * thorax - w0) / (left + r_share * right)
    scales = {"+x": 1 + k, "-x": 1 + r_share * k, "-y": 1 + float(rng.uniform(0.5, 0.8)) * k,
              "+y": 1 + float(rng.uniform(0.2, 0.4)) * k, "-z": 1 + float(rng.uniform(0.4, 0.6)) * k,
              "+z": 1 + 0.1 * k}
    # box around the heart centroid holding the grown heart
    box = SubBox(anatomy, c, _grown_half_extent(anatomy, ((i0, i1), (j0, j1), (k0, k1)), c, scales, 3))
    occ_h = box.take(heart)
    grown = _scaled_occupancy(box, occ_h, scales)
    # a slightly bumpy new contour (chamber convexities), not a perfect copy
    grown = (grown * (1 + 0.05 * smooth_noise(rng, box.shape, 8.0, box.spacing_mm))).clamp(0, 1)
    shell = (grown - occ_h).clamp(0, 1)
    keep, fill_to = _heart_surroundings(anatomy, box)
    delta = shell.mul_(fill_to)
    return [crop_lesion("cardiomegaly", delta, side="midline", zone="diffuse", severity=severity, origin=box.origin,
                        ctr_before=ctr0, ctr=cardiothoracic_ratio(anatomy, grown * keep, box.origin))]


def _grown_half_extent(anatomy: Anatomy, bbox, c, scales: dict, margin_vox: int) -> list[float]:
    """Half sizes (mm, per axis) of a box about ``c`` that holds the organ box ``bbox`` (voxel index
    ranges) after scaling each side by ``scales`` ("-x", "+x", ...), plus ``margin_vox`` voxels."""
    half = []
    for ax, name in enumerate("xyz"):
        lo_i, hi_i = bbox[ax]
        a = anatomy.index_to_mm([lo_i] * 3)[ax] - c[ax]
        b = anatomy.index_to_mm([hi_i - 1] * 3)[ax] - c[ax]
        half.append(max(-a * scales[f"-{name}"], b * scales[f"+{name}"]) + margin_vox * anatomy.spacing_mm[ax])
    return half


def _heart_surroundings(anatomy: Anatomy, box: SubBox) -> tuple[torch.Tensor, torch.Tensor]:
    """On ``box``: what a growing heart may take (not bone, not the trachea) and, times the weight of
    displaceable tissue, the change of attenuation to heart density.  Computed once per patient on the
    box of the largest possible enlargement, and cut from it."""
    key = "findings.heart_surroundings"
    if key not in anatomy._cache:
        # the largest box make_cardiomegaly can ask for: the largest target ratio and scales
        (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, "heart")
        c = organ_centroid(anatomy, "heart")
        x_lo, x_hi = anatomy.index_to_mm((i0, 0, 0))[0], anatomy.index_to_mm((i1 - 1, 0, 0))[0]
        thorax, w0 = _width_mm(anatomy, "lung"), _width_mm(anatomy, "heart")
        k = (max(0.70, w0 / thorax + 0.12) * thorax - w0) / ((x_hi - c[0]) + 0.3 * (c[0] - x_lo))
        scales = {"+x": 1 + k, "-x": 1 + 0.5 * k, "-y": 1 + 0.8 * k, "+y": 1 + 0.4 * k, "-z": 1 + 0.6 * k,
                  "+z": 1 + 0.1 * k}
        big = SubBox(anatomy, c, _grown_half_extent(anatomy, ((i0, i1), (j0, j1), (k0, k1)), c, scales, 4))
        anatomy._cache[key] = (big,) + _surroundings(anatomy, big)
    big, keep, fill_to = anatomy._cache[key]
    if all(a >= b for a, b in zip(box.origin, big.origin)) and all(
            a + n <= b + m for a, n, b, m in zip(box.origin, box.shape, big.origin, big.shape)):
        sl = tuple(slice(a - b, a - b + n) for a, b, n in zip(box.origin, big.origin, box.shape))
        return keep[sl], fill_to[sl]
    return _surroundings(anatomy, box)


def _surroundings(anatomy: Anatomy, box: SubBox) -> tuple[torch.Tensor, torch.Tensor]:
    mu = box.take(anatomy.mu)
    keep = (1 - _bone(anatomy, box)) * (1 - box.take(anatomy.organ("trachea")))
    return keep, keep * _displaceable(mu) * (_median_mu(anatomy, "heart") - mu).clamp_min(0.0)


def make_aortic_enlargement(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                            zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """A dilated, unfolded thoracic aorta: the arch and descending aorta grow outward (4-6 / 7-10 /
    11-15 mm to the left, about half that to the right and front), the knob most."""
    from scipy.ndimage import distance_transform_edt

    check_choice(side, ("midline",), "side")
    check_choice(zone, ("upper", "diffuse"), "zone")
    zone = zone or "upper"
    g_lo, g_hi = severity_scale(severity, (4.0, 6.0), (7.0, 10.0), (11.0, 15.0))  # type: ignore[misc]
    grow = float(rng.uniform(g_lo, g_hi))
    aorta = anatomy.organ("aorta")
    (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, "aorta")
    hc = organ_centroid(anatomy, "heart")
    z_top = anatomy.index_to_mm((0, 0, k1 - 1))[2]
    z_bottom = hc[2] - 20.0 if zone == "diffuse" else hc[2] + 25.0  # thoracic aorta above this
    lo = [anatomy.index_to_mm((i0, j0, 0))[0], anatomy.index_to_mm((i0, j0, 0))[1], z_bottom]
    hi = [anatomy.index_to_mm((i1 - 1, j1 - 1, 0))[0], anatomy.index_to_mm((i1 - 1, j1 - 1, 0))[1], z_top]
    margin = 2 * grow + 6.0
    center = [(a + b) / 2 for a, b in zip(lo, hi)]
    box = SubBox(anatomy, center, [(b - a) / 2 + margin for a, b in zip(lo, hi)])
    occ_a = box.take(aorta)
    z = box.d[2] + box.center_mm[2]
    dist = torch.from_numpy(distance_transform_edt((occ_a < 0.5).numpy(), sampling=box.spacing_mm).astype(np.float32))
    g = np.gradient(dist.numpy(), *box.spacing_mm)
    gx = torch.from_numpy(g[0].astype(np.float32))
    gz = torch.from_numpy(g[2].astype(np.float32))
    mag = torch.sqrt(gx * gx + torch.from_numpy(g[1].astype(np.float32)) ** 2 + gz * gz).clamp_min(1e-6)
    n = (gx / mag, None, gz / mag)
    wobble = 1 + 0.12 * smooth_noise(rng, box.shape, 10.0, box.spacing_mm)
    reach = grow * (0.5 + 0.5 * n[0].clamp_min(0) + 0.15 * n[2].clamp_min(0)) * wobble
    shell = soft_step(reach - dist, min(anatomy.spacing_mm)) * (dist > 0)
    shell = shell * torch.sigmoid((z - z_bottom) / 6.0)
    mu = box.take(anatomy.mu)
    keep = (1 - _bone(anatomy, box)) * (1 - box.take(anatomy.organ("trachea"))) * (1 - box.take(anatomy.organ("heart")))
    delta = shell * keep * _displaceable(mu) * (_median_mu(anatomy, "aorta") - mu).clamp_min(0.0)
    return [crop_lesion("aortic_enlargement", delta, side="midline", zone=zone, severity=severity,
                        origin=box.origin, growth_mm=grow)]


def make_hiatal_hernia(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                       zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """A retrocardiac round soft-tissue sac above the hiatus (35-50 / 50-70 / 70-95 mm wide), most
    often with an air-fluid level (gas above, fluid below)."""
    check_choice(side, ("midline",), "side")
    check_choice(zone, ("lower",), "zone")
    d_lo, d_hi = severity_scale(severity, (35.0, 50.0), (50.0, 70.0), (70.0, 95.0))  # type: ignore[misc]
    diam = float(rng.uniform(d_lo, d_hi))
    R = diam / 2
    axes = (float(rng.uniform(1.05, 1.25)), float(rng.uniform(0.8, 0.95)), float(rng.uniform(0.75, 0.9)))
    eso = anatomy.organ("esophagus")
    (_, _), (_, _), (k0, _) = organ_bbox(anatomy, "esophagus")
    low = eso[:, :, k0:k0 + 4]
    m = float(low.sum())
    hiatus = [float((low * c[:, :, k0:k0 + 4]).sum()) / m for c in anatomy.coords_mm()]
    cx = hiatus[0] + float(rng.uniform(5.0, 15.0))  # hernias bulge mostly to the left
    i, j, _ = (int(round(v)) for v in anatomy.mm_to_index((cx, hiatus[1], 0.0)))
    # above the diaphragm: the top of the liver / stomach under the hiatus column
    below = torch.maximum(anatomy.organ("liver")[i, j - 3:j + 4], anatomy.organ("stomach")[i, j - 3:j + 4])
    top = torch.nonzero((below >= 0.5).any(0)).flatten()
    z_dome = anatomy.index_to_mm((0, 0, int(top.max())))[2] if top.numel() else hiatus[2] + 20.0
    cz = max(z_dome, hiatus[2]) + float(rng.uniform(0.55, 0.75)) * R * axes[2]
    # behind the heart: the heart's posterior border in the column (cx, cz), minus most of the sac's depth
    i, _, k = (int(round(v)) for v in anatomy.mm_to_index((cx, 0.0, cz)))
    col = torch.nonzero(anatomy.organ("heart")[i, :, k] >= 0.5).flatten()
    y_back = anatomy.index_to_mm((0, int(col.min()), 0))[1] if col.numel() else hiatus[1]
    center = (cx, min(y_back, hiatus[1] + 10.0) - float(rng.uniform(0.5, 0.7)) * R * axes[1], cz)
    box = SubBox(anatomy, center, R * 1.3 * max(axes) + 4.0)
    vox = min(anatomy.spacing_mm)
    outer = lobulated_ball(box, rng, R, 0.05, edge_mm=vox, axes=axes, lobe_mm=0.5 * R)
    wall_mm = float(rng.uniform(2.5, 4.0))
    inner = soft_step(R - wall_mm - box.radius(axes), vox)
    inner = torch.minimum(inner, outer)
    air_fluid = bool(rng.random() < 0.8)
    z = box.d[2]
    if air_fluid:
        level = float(rng.uniform(-0.25, 0.2)) * R * axes[2]  # the level, relative to the centre
        air = soft_step(z - level, vox) * inner
    else:
        gas = smooth_noise(rng, box.shape, 3.0, box.spacing_mm)
        air = ((gas - 1.6) / 0.4).clamp(0, 1) * inner * torch.sigmoid(z / 5.0)
    fluid = inner - air
    wall = outer - inner
    mu = box.take(anatomy.mu)
    # the sac pushes aside lung, fat and the oesophagus; it never replaces the heart, aorta, liver or bone
    keep = (1 - _bone(anatomy, box)) * (1 - box.take(anatomy.organ("heart"))) * (1 - box.take(anatomy.organ("aorta")))
    keep = keep * (1 - box.take(anatomy.organ("liver")))
    target = (wall + fluid) * MU_WATER * 1.02 + air * MU_AIR
    delta = keep.clamp(0, 1) * (target - outer * mu)
    return [crop_lesion("hiatal_hernia", delta, side="midline", zone="lower", severity=severity, origin=box.origin,
                        diameter_mm=diam, air_fluid_level=air_fluid, center_mm=center)]


SPECS = [
    FindingSpec("cardiomegaly", make_cardiomegaly, ("midline",), ("diffuse",),
                "enlarged heart (cardiothoracic ratio > 0.5 for moderate/severe), mostly to the left and down"),
    FindingSpec("aortic_enlargement", make_aortic_enlargement, ("midline",), ("upper", "diffuse"),
                "dilated/unfolded thoracic aorta: prominent knob, bulging arch and descending aorta"),
    FindingSpec("hiatal_hernia", make_hiatal_hernia, ("midline",), ("lower",),
                "retrocardiac round opacity above the diaphragm, often with an air-fluid level"),
]
