"""Patients, lesion projection, acquisition, boxes and flips of the radiograph synthesis."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from refers_lite.data.assets import AssetMissingError

try:
    from refers_lite.data.synthesis.anatomy import load_base_anatomy, make_patient, sample_patient_params
    BASE = load_base_anatomy()
except AssetMissingError as e:  # pragma: no cover - CI fetches the assets first
    pytest.skip(f"chest CT asset missing: {e}", allow_module_level=True)

from refers_lite.data.synthesis.drr import render
from refers_lite.data.synthesis.findings.base import box_from_projection, crop_lesion
from refers_lite.data.synthesis.render import (ACQUISITIONS, Box, ImageItem, PatientRenderer, _affine, _MEMO,
                                        _transform_box, _warp, flip_radiograph, render_item)


def ball_lesion(anat, organ="lung_upper_left", r=12.0, mu=0.02, name="nodule", side="left"):
    x, y, z = anat.coords_mm()
    c = anat.centroid_mm(organ)
    d = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r**2).float() * mu
    return crop_lesion(name, d, side=side, zone="upper", severity="moderate")


@pytest.fixture(scope="module")
def patient():
    return make_patient(BASE, 7)


@pytest.mark.slow
def test_patients_are_seeded_and_differ(patient):
    again = make_patient(BASE, 7)
    assert torch.equal(patient.mu, again.mu)
    other = make_patient(BASE, 8)
    assert float((patient.mu - other.mu).abs().mean()) > 1e-4
    for occ in patient.organs.values():
        assert float(occ.min()) >= 0 and float(occ.max()) <= 1
    assert sample_patient_params(3) == sample_patient_params(3) != sample_patient_params(4)


@pytest.mark.slow
def test_heart_scale_changes_heart_volume():
    from dataclasses import replace
    p = sample_patient_params(1)
    small = make_patient(BASE, replace(p, heart_scale=0.9, warp_mm=0.0))
    big = make_patient(BASE, replace(p, heart_scale=1.1, warp_mm=0.0))
    assert float(big.organ("heart").sum()) > 1.2 * float(small.organ("heart").sum())


@pytest.mark.parametrize("view", ["pa", "ap", "lateral"])
def test_lesion_projection_is_exactly_additive(patient, view):
    les = ball_lesion(patient)
    full = render(les.apply(patient.mu), patient.spacing_mm, view=view, size=96)
    parts = render(patient.mu, patient.spacing_mm, view=view, size=96) + les.project(patient, view, size=96)
    assert float((full - parts).abs().max()) < 1e-4 * float(full.max())


def test_left_lesion_appears_on_image_right_in_pa(patient):
    les = ball_lesion(patient, "lung_upper_left")
    x0, y0, x1, y1 = box_from_projection(les.project(patient, "pa", size=128))
    assert (x0 + x1) / 2 > 64
    les = ball_lesion(patient, "lung_lower_right", side="right")
    x0, y0, x1, y1 = box_from_projection(les.project(patient, "pa", size=128))
    assert (x0 + x1) / 2 < 64


@pytest.mark.parametrize("rot,shift,zoom", [(0.0, (0.0, 0.0), 1.0), (6.0, (9.0, -4.0), 1.07), (-4.0, (-6.0, 3.0), 0.95)])
def test_box_follows_rotation_shift_and_zoom(patient, rot, shift, zoom):
    les = ball_lesion(patient)
    p = les.project(patient, "pa", size=128)
    warped_box = box_from_projection(_warp(p, _affine(rot, shift, 128, zoom)))
    tb = _transform_box(box_from_projection(p), rot, shift, 128, zoom)
    # the transformed box holds the box measured on the warped projection, and is not much larger
    assert tb[0] <= warped_box[0] + 1 and tb[1] <= warped_box[1] + 1
    assert tb[2] >= warped_box[2] - 1 and tb[3] >= warped_box[3] - 1
    assert (tb[2] - tb[0]) * (tb[3] - tb[1]) < 2.0 * (warped_box[2] - warped_box[0]) * (warped_box[3] - warped_box[1])


def test_radiograph_is_uint8_with_boxes_inside_and_clear_collimation(patient):
    pr = PatientRenderer(patient, 128)
    les = ball_lesion(patient)
    for view in ("frontal", "lateral"):
        s = ACQUISITIONS["covid"].sample(np.random.default_rng(0), view)
        r = pr.radiograph([les], s)
        assert r.image.dtype == np.uint8 and r.image.shape == (128, 128)
        assert len(r.boxes) == 1
        b = r.boxes[0]
        assert 0 <= b.x0 < b.x1 <= 128 and 0 <= b.y0 < b.y1 <= 128
        assert (r.image[0] == r.image[0, 0]).all() and (r.image[-1] == r.image[-1, 0]).all()  # clear film borders
    with pytest.raises(ValueError, match="view"):
        ACQUISITIONS["iu"].sample(np.random.default_rng(0), "oblique")


@pytest.mark.slow
def test_render_item_is_deterministic():
    item = ImageItem("x", 1000, "frontal", 5, (), "nih", 11)
    a = render_item(item, 96).image
    _MEMO["patients"].clear()
    _MEMO["lesions"].clear()
    b = render_item(item, 96).image
    assert np.array_equal(a, b)
    c = render_item(ImageItem("x", 1000, "frontal", 5, (), "nih", 12), 96).image
    assert not np.array_equal(a, c)


def test_flip_swaps_sides_in_image_boxes_and_text():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    boxes = [Box("nodule", 0, 0, 1, 2, "right"), Box("cardiomegaly", 1, 0, 3, 3, "midline")]
    f, fb, ft = flip_radiograph(img, boxes, "Left lower lobe opacity. Right lung clear.")
    assert np.array_equal(f[:, ::-1], img)
    assert (fb[0].x0, fb[0].x1, fb[0].side) == (3, 4, "left")
    assert (fb[1].x0, fb[1].x1, fb[1].side) == (1, 3, "midline")
    assert ft == "Right lower lobe opacity. Left lung clear."
    g, gb, gt = flip_radiograph(f, fb, ft)
    assert np.array_equal(g, img) and gb == boxes and gt == "Left lower lobe opacity. Right lung clear."
