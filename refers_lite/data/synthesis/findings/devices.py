"""Distractors: a central venous catheter and degenerative change of the thoracic spine.

Neither is what the model is asked to find, but real radiographs are full of them (see
:mod:`.base` for the contract):

* ``catheter``: a central venous line, a thin (2-3 mm) radio-opaque tube (mu 0.1-0.2 per mm) on a
  smooth 3D curve from a subclavian (below the clavicle) or internal jugular (neck) entry, through
  that side's brachiocephalic vein and down the superior vena cava to the cavo-atrial junction,
  following the patient's own ``svc`` mask.  ``side`` is the side of insertion.
* ``degenerative_spine``: osteophytes, small bony spurs (beaks) at the anterior and lateral margins
  of the vertebral endplates of several thoracic disc levels, on the ``spine`` mask.
"""
from __future__ import annotations

import numpy as np
import torch

from ..anatomy import Anatomy, Lesion
from .base import MU_CALCIUM, FindingSpec, crop_lesion, pick, severity_scale
from .focal import SubBox, check_choice, organ_bbox, smooth_noise, soft_step, tube_profile, zone_z_range

__all__ = ["SPECS", "make_catheter", "make_degenerative_spine", "catheter_path"]


def _components(mask2d: np.ndarray, min_size: int = 3):
    from scipy import ndimage

    lab, n = ndimage.label(mask2d)
    out = []
    for i in range(1, n + 1):
        idx = np.argwhere(lab == i)
        if len(idx) >= min_size:
            out.append(idx.mean(0))
    return out


def _smooth_path(points: np.ndarray, step_mm: float = 0.5, sigma_mm: float = 6.0) -> np.ndarray:
    """Resample a polyline (N, 3) at ``step_mm`` and smooth it with a gaussian along its length,
    keeping both ends in place."""
    from scipy.ndimage import gaussian_filter1d

    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-6])
    points = points[keep]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    t = np.arange(0.0, s[-1] + 1e-9, step_mm)
    dense = np.stack([np.interp(t, s, points[:, a]) for a in range(3)], 1)
    if len(dense) < 3:
        return dense
    sm = gaussian_filter1d(dense, sigma=sigma_mm / step_mm, axis=0, mode="nearest")
    # pin the ends (entry and tip) and blend over ~2 sigma
    n = len(dense)
    w = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) * step_mm / (2 * sigma_mm), 0, 1)[:, None]
    return w * sm + (1 - w) * dense


def _venous_landmarks(anatomy: Anatomy):
    """Per axial level of the ``svc`` mask, the centres (mm) of its cross-sections (one for the
    SVC, two for the brachiocephalic veins), and the clavicles as point sets (mm); memoised."""
    key = "findings.venous_landmarks"
    if key in anatomy._cache:
        return anatomy._cache[key]
    from scipy import ndimage

    (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, "svc")
    svc = (anatomy.organ("svc")[i0:i1, j0:j1, k0:k1] >= 0.5).numpy()
    per_z = [[np.array(anatomy.index_to_mm((i0 + c[0], j0 + c[1], k))) for c in _components(svc[:, :, k - k0])]
             for k in range(k0, k1)]
    (a0, a1), (b0, b1), (c0, c1) = organ_bbox(anatomy, "clavicles")
    cl = (anatomy.organ("clavicles")[a0:a1, b0:b1, c0:c1] >= 0.5).numpy()
    lab, n = ndimage.label(cl)
    clavicles = []
    spacing = np.array(anatomy.spacing_mm)
    offset = np.array([anatomy.index_to_mm((a0, b0, c0))])
    for i in range(1, n + 1):
        idx = np.argwhere(lab == i)
        if len(idx) >= 10:
            clavicles.append(offset + idx * spacing)
    anatomy._cache[key] = ((k0, k1), per_z, clavicles)
    return anatomy._cache[key]


def catheter_path(anatomy: Anatomy, rng: np.random.Generator, side: str, route: str) -> np.ndarray:
    """Centre line (N, 3) in mm of a central line inserted on ``side`` ("left"/"right") by ``route``
    ("subclavian"/"jugular"): entry -> that side's brachiocephalic vein -> SVC -> cavo-atrial junction."""
    (k0, k1), per_z, clavicles = _venous_landmarks(anatomy)
    # trunk (SVC): single component from the bottom up; then the two brachiocephalic veins
    trunk, split = [], k1
    for k in range(k0, k1):
        comps = per_z[k - k0]
        if len(comps) == 1 and (not trunk or abs(comps[0][0] - trunk[-1][0]) < 15.0):
            trunk.append(comps[0])
        elif comps and trunk:
            split = k
            break
    if not trunk:
        raise ValueError("the svc mask has no superior vena cava trunk")
    x_ref = trunk[-1][0]
    branch = []  # that side's vein, bottom -> top
    for k in range(split, k1):
        cands = [c for c in per_z[k - k0] if (c[0] > x_ref + 8.0 if side == "left" else c[0] < x_ref + 8.0)]
        if cands:
            ref = branch[-1] if branch else trunk[-1]
            branch.append(min(cands, key=lambda c: float(np.linalg.norm(c - ref))))
    sign = 1.0 if side == "left" else -1.0
    top = branch[-1] if branch else trunk[-1]
    pts = []
    if route == "subclavian":
        best = None
        for mm in clavicles:
            if np.sign(mm[:, 0].mean() - x_ref) == sign and (best is None or len(mm) > len(best)):
                best = mm
        if best is None:
            route = "jugular"
        else:
            xs = best[:, 0] * sign
            medial, lateral = xs.min(), xs.max()
            f = float(rng.uniform(0.4, 0.6))
            xe = medial + f * (lateral - medial)
            near = best[np.abs(xs - xe) < 6.0]
            c_mid = near.mean(0) if len(near) else best.mean(0)
            skin = c_mid + np.array([sign * 12.0, 14.0, -14.0])  # infraclavicular puncture, under the skin
            under = c_mid + np.array([0.0, -6.0, -9.0])  # the subclavian vein, behind/below the clavicle
            near_med = best[np.abs(xs - (medial + 0.15 * (lateral - medial))) < 6.0]
            c_med = (near_med.mean(0) if len(near_med) else c_mid) + np.array([0.0, -10.0, -8.0])
            pts = [skin, under, c_med]
    if route == "jugular":
        z_top = anatomy.shape[2] * anatomy.spacing_mm[2] / 2 - 4.0
        neck = top + np.array([sign * 10.0, -8.0, 0.0])
        neck[2] = min(z_top, top[2] + 45.0)
        pts = [neck, top + np.array([sign * 6.0, -4.0, 15.0])]
    pts += branch[::-1] + trunk[::-1]
    tip = trunk[0] + np.array([0.0, 0.0, -float(rng.uniform(0.0, 8.0))])  # at / just below the junction
    pts.append(tip)
    path = np.array(pts, dtype=float)
    # keep the path inside the grid
    half = np.array([n * s / 2 for n, s in zip(anatomy.shape, anatomy.spacing_mm)])
    path = np.clip(path, -half + 3.0, half - 3.0)
    return _smooth_path(path)


def make_catheter(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None, zone: str | None = None,
                  severity: str = "moderate") -> list[Lesion]:
    """A central venous catheter inserted on ``side`` (subclavian or internal jugular), tip at the
    cavo-atrial junction.  ``severity`` only sets the tube calibre (mild thinner)."""
    from scipy.ndimage import binary_dilation
    from scipy.spatial import cKDTree

    check_choice(side, ("left", "right"), "side")
    check_choice(zone, ("upper",), "zone")
    radius = float(rng.uniform(*severity_scale(severity, (1.0, 1.2), (1.2, 1.5), (1.5, 1.9))))  # type: ignore[misc]
    side = pick(rng, side, ("left", "right"), "side")
    route = "subclavian" if rng.random() < 0.6 else "jugular"
    mu_c = float(rng.uniform(0.15, 0.2))  # barium-loaded polyurethane wall and its lumen, averaged
    path = catheter_path(anatomy, rng, side, route)
    lo, hi = path.min(0) - 5.0, path.max(0) + 5.0
    box = SubBox(anatomy, (lo + hi) / 2, (hi - lo) / 2)
    # candidate voxels: those the path passes through, dilated by two voxels
    first = np.array([float(box.d[a][(0, 0, 0)]) + box.center_mm[a] for a in range(3)])
    idx = np.round((path - first) / np.array(box.spacing_mm)).astype(int)
    idx = np.clip(idx, 0, np.array(box.shape) - 1)
    cand = np.zeros(box.shape, dtype=bool)
    cand[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    cand = binary_dilation(cand, iterations=2)
    ci = np.argwhere(cand)
    pos = first + ci * np.array(box.spacing_mm)
    dist, _ = cKDTree(path).query(pos, distance_upper_bound=8.0)
    dist = np.minimum(dist, 8.0)
    occ = torch.zeros(box.shape)
    occ[tuple(torch.from_numpy(ci.T))] = tube_profile(torch.from_numpy(dist.astype(np.float32)), radius,
                                                       min(anatomy.spacing_mm))
    delta = occ * (mu_c - box.take(anatomy.mu))
    length = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
    return [crop_lesion("catheter", delta, side=side, zone="upper", severity=severity, origin=box.origin,
                        route=route, radius_mm=radius, length_mm=length, mu=mu_c,
                        entry_mm=tuple(float(v) for v in path[0]), tip_mm=tuple(float(v) for v in path[-1]))]


def _disc_levels(anatomy: Anatomy, k_lo: int, k_hi: int) -> list[tuple[int, tuple[float, float]]]:
    """Disc levels (z index) between k_lo and k_hi, and the vertebral body centre (x, y mm) there:
    local minima of the vertebral-body cross-section (the discs are not in the spine mask)."""
    return [(k, c) for k, c in _all_disc_levels(anatomy) if k_lo <= k < k_hi]


def _all_disc_levels(anatomy: Anatomy) -> list[tuple[int, tuple[float, float]]]:
    key = "findings.disc_levels"
    if key in anatomy._cache:
        return anatomy._cache[key]
    from scipy.ndimage import gaussian_filter1d

    (i0, i1), (j0, j1), (k0, k1) = organ_bbox(anatomy, "spine")
    m = (anatomy.organ("spine")[i0:i1, j0:j1, k0:k1] >= 0.5).float()
    x = anatomy.coords_mm()[0][i0:i1, 0, 0]
    y = anatomy.coords_mm()[1][0, j0:j1, 0]
    # the anterior-most spine voxel per level, then the anterior 28 mm: the vertebral body
    y_front = torch.where(m.any(0) > 0, y[:, None], torch.full((j1 - j0, 1), -1e9)).amax(0)  # (Z,)
    body = m * (y[None, :, None] > (y_front - 28.0)[None, None, :])
    area = body.sum(dim=(0, 1))  # (Z,)
    cx = (body * x[:, None, None]).sum(dim=(0, 1)) / area.clamp_min(1e-6)
    prof = np.zeros(anatomy.shape[2])
    prof[k0:k1] = gaussian_filter1d(area.numpy().astype(float), 0.8)
    has = np.zeros(anatomy.shape[2], dtype=bool)
    has[k0:k1] = area.numpy() > 0
    out: list[tuple[int, tuple[float, float]]] = []
    for k in range(max(k0, 3), min(k1, anatomy.shape[2] - 3)):
        if prof[k] < prof[k - 1] and prof[k] <= prof[k + 1] and prof[k] < 0.9 * prof[k - 3:k + 4].max() \
                and has[k - 2] and has[k + 2] and (not out or k - out[-1][0] >= 5):
            a, b = k - 2 - k0, k + 2 - k0
            out.append((k, (float(cx[a] + cx[b]) / 2, float(y_front[a] + y_front[b]) / 2 - 14.0)))
    anatomy._cache[key] = out
    return out


def make_degenerative_spine(anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                            zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """Thoracic spondylosis: marginal osteophytes (beaks 3-4.5 / 4.5-7 / 7-10 mm) at the anterior and
    lateral endplate margins of 2-3 / 3-5 / 5-8 disc levels, in the ``zone`` third of the thoracic
    spine (default: the lower two thirds, where they are commonest)."""
    from scipy.ndimage import distance_transform_edt

    check_choice(side, ("midline",), "side")
    check_choice(zone, ("upper", "middle", "lower", "diffuse"), "zone")
    (l_lo, l_hi), (n_lo, n_hi) = severity_scale(severity, ((3.0, 4.5), (2, 3)), ((4.5, 7.0), (3, 5)),  # type: ignore[misc]
                                                ((7.0, 10.0), (5, 8)))
    zone = zone or "diffuse"
    k_lo, k_hi = zone_z_range(anatomy, "left", zone)
    if zone == "diffuse":
        k_lo = k_lo + (k_hi - k_lo) // 6
    levels = _disc_levels(anatomy, k_lo, k_hi)
    if not levels:
        raise ValueError(f"no thoracic disc level found in the {zone} zone")
    n = min(int(rng.integers(n_lo, n_hi + 1)), len(levels))
    start = int(rng.integers(0, len(levels) - n + 1))
    chosen = levels[start:start + n]
    spine = anatomy.organ("spine")
    z_top = anatomy.index_to_mm((0, 0, chosen[-1][0]))[2]
    z_bot = anatomy.index_to_mm((0, 0, chosen[0][0]))[2]
    cx = float(np.mean([c[0] for _, c in chosen]))
    cy = float(np.mean([c[1] for _, c in chosen]))
    box = SubBox(anatomy, (cx, cy, (z_top + z_bot) / 2), (45.0, 40.0, (z_top - z_bot) / 2 + 12.0))
    occ = torch.zeros(box.shape)
    sp = box.take(spine)
    vox = min(anatomy.spacing_mm)
    knob = smooth_noise(rng, box.shape, 5.0, box.spacing_mm)
    zz = box.d[2] + box.center_mm[2]
    for k, (bx, by) in chosen:
        kz = k - box.origin[2]
        z_d = anatomy.index_to_mm((0, 0, k))[2]
        # vertebral-body outline at the endplates next to this disc (2D, union of the nearby slices)
        sl = sp[:, :, max(kz - 3, 0):kz + 4]
        body_y = box.d[1][:, :, 0] + box.center_mm[1]
        outline = (sl >= 0.5).any(2) & (body_y > by - 14.0)  # the body, not the posterior elements
        if not bool(outline.any()):
            continue
        d2 = torch.from_numpy(distance_transform_edt(~outline.numpy(), sampling=box.spacing_mm[:2]).astype(np.float32))
        ux = box.d[0][:, :, 0] + box.center_mm[0] - bx
        uy = body_y - by
        r = torch.sqrt(ux**2 + uy**2).clamp_min(1e-3)
        front_side = ((uy / r + 0.45) / 0.8).clamp(0, 1)  # anterior and lateral, none posteriorly
        length = float(rng.uniform(l_lo, l_hi))
        # a beak lies within 2.5 mm (z_e) + 3 mm (half thickness) + half a voxel of the disc level: only
        # the slices within 7 mm of it can change (o is exactly 0 beyond)
        ks = torch.nonzero((zz[0, 0] - z_d).abs() <= 7.0).flatten()
        zs = slice(int(ks[0]), int(ks[-1]) + 1)
        for e in (+1.0, -1.0):  # beaks from the upper and the lower endplate, curving towards the disc
            L = length * front_side[:, :, None] * (0.35 + 0.65 * (knob[:, :, max(kz - 2, 0):max(kz - 2, 0) + 1] + 0.6).clamp(0, 1.4))
            z_e = z_d + e * (2.5 - 1.6 * (d2[:, :, None] / max(length, 1e-3)).clamp(0, 1))
            half_t = 2.6 * (1 - d2[:, :, None] / L.clamp_min(1e-3)).clamp(0, 1) + 0.4
            o = soft_step(L - d2[:, :, None], vox) * soft_step(half_t - (zz[:, :, zs] - z_e).abs(), vox) * (d2[:, :, None] > 0)
            occ[:, :, zs] = torch.maximum(occ[:, :, zs], o)
    target = MU_CALCIUM * float(rng.uniform(0.85, 1.0))
    delta = occ * (1 - sp) * (target - box.take(anatomy.mu)).clamp_min(0.0)
    return [crop_lesion("degenerative_spine", delta, side="midline", zone=zone, severity=severity, origin=box.origin,
                        levels=len(chosen), spur_mm=(l_lo, l_hi))]


SPECS = [
    FindingSpec("catheter", make_catheter, ("left", "right"), ("upper",),
                "central venous catheter (subclavian or jugular) down the SVC to the cavo-atrial junction"),
    FindingSpec("degenerative_spine", make_degenerative_spine, ("midline",), ("upper", "middle", "lower", "diffuse"),
                "thoracic spondylosis: anterior and lateral marginal osteophytes at several disc levels"),
]
