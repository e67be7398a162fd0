"""Geometry and display checks of the DRR renderer on small synthetic phantoms."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from refers_lite.data.synthesis.drr import VIEWS, hu_to_mu, prepare_volume, render, to_radiograph, to_uint8

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")


def ball(shape: tuple[int, int, int], spacing: tuple[float, float, float], center_mm, radius_mm: float,
         mu: float = 0.02) -> torch.Tensor:
    """(X, Y, Z) volume, zero except a ball; ``center_mm`` in the patient frame (origin = box centre)."""
    axes = [((torch.arange(n) + 0.5) * s - n * s / 2 - c) for n, s, c in zip(shape, spacing, center_mm)]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    return ((x**2 + y**2 + z**2) <= radius_mm**2).float() * mu


def disk_radius_px(img: torch.Tensor) -> float:
    """Radius of the projected disk from its area (pixels above 5 % of the peak)."""
    return math.sqrt(float((img > 0.05 * img.max()).sum()) / math.pi)


def centroid(img: torch.Tensor) -> tuple[float, float]:
    """(row, col) centre of mass."""
    h, w = img.shape
    m = img.sum()
    return float((img.sum(1) * torch.arange(h)).sum() / m), float((img.sum(0) * torch.arange(w)).sum() / m)


def predicted_radius_px(radius_mm: float, source_to_center_mm: float, sid_mm: float, pitch_mm: float) -> float:
    """Exact cone-beam silhouette of a sphere: SID * r / sqrt(d^2 - r^2) (about r * SID / d)."""
    return sid_mm * radius_mm / math.sqrt(source_to_center_mm**2 - radius_mm**2) / pitch_mm


SHAPE, SP = (64, 64, 64), (1.5, 1.5, 1.5)


@pytest.mark.parametrize("method", ["slices", "raymarch"])
def test_sphere_projects_to_magnified_disk(method):
    sid, odd, r, size, det = 1000.0, 500.0, 15.0, 128, 200.0
    mu = ball(SHAPE, SP, (0, 0, 0), r)
    img = render(mu, SP, "pa", size=size, sid_mm=sid, iso_to_detector_mm=odd, detector_mm=det, method=method,
                 n_samples=160)
    pred = predicted_radius_px(r, sid - odd, sid, det / size)  # ~19.2 px, twice the unmagnified 9.6
    assert abs(disk_radius_px(img) - pred) < 1.5
    row, col = centroid(img)
    assert abs(row - (size - 1) / 2) < 0.5 and abs(col - (size - 1) / 2) < 0.5


def test_ap_magnifies_an_anterior_object_more_than_pa():
    sid, odd, r, size, det, y = 1000.0, 400.0, 10.0, 256, 200.0, 25.0
    mu = ball(SHAPE, SP, (0, y, 0), r)  # anterior, like the heart
    kw = dict(size=size, sid_mm=sid, iso_to_detector_mm=odd, detector_mm=det)
    pa, ap = render(mu, SP, "pa", **kw), render(mu, SP, "ap", **kw)
    sod, pitch = sid - odd, det / size
    pred_pa = predicted_radius_px(r, sod + y, sid, pitch)  # PA: object nearer the detector
    pred_ap = predicted_radius_px(r, sod - y, sid, pitch)
    assert abs(disk_radius_px(pa) - pred_pa) < 1.5 and abs(disk_radius_px(ap) - pred_ap) < 1.5
    assert disk_radius_px(ap) - disk_radius_px(pa) > 0.7 * (pred_ap - pred_pa)


@pytest.mark.parametrize("view", ["pa", "ap"])
def test_frontal_patient_right_on_image_left_head_up(view):
    mu = ball(SHAPE, SP, (-25, 0, 20), 8)  # patient's right (-x), superior (+z)
    img = render(mu, SP, view, size=64, detector_mm=200)
    row, col = centroid(img)
    assert col < 64 / 2 - 5, "patient's right must be on the image's left"
    assert row < 64 / 2 - 5, "head must be at the top"


def test_lateral_anterior_on_image_left_head_up():
    mu = ball(SHAPE, SP, (0, 25, 20), 8)  # anterior, superior
    img = render(mu, SP, "lateral", size=64, detector_mm=200)
    row, col = centroid(img)
    assert col < 64 / 2 - 5 and row < 64 / 2 - 5


def test_left_lateral_magnifies_right_side_object_more():
    """Left lateral: detector on the patient's left, so a right-sided object is magnified more."""
    kw = dict(size=256, sid_mm=1000.0, iso_to_detector_mm=400.0, detector_mm=200.0)
    left = disk_radius_px(render(ball(SHAPE, SP, (25, 0, 0), 10), SP, "lateral", **kw))
    right = disk_radius_px(render(ball(SHAPE, SP, (-25, 0, 0), 10), SP, "lateral", **kw))
    assert right > left + 1


@pytest.mark.parametrize("method", ["slices", "raymarch"])
def test_uniform_slab_line_integral_is_mu_times_thickness(method):
    mu_val, shape, sp = 0.02, (32, 40, 24), (5.0, 2.5, 5.0)  # 100 mm thick along y
    mu = torch.full(shape, mu_val)
    # near-parallel geometry: every ray crosses the full 100 mm slab
    img = render(mu, sp, "pa", size=16, sid_mm=1e6, iso_to_detector_mm=100, detector_mm=80, method=method,
                 n_samples=64)
    assert torch.allclose(img, torch.full_like(img, mu_val * 100.0), rtol=1e-4)
    # clinical geometry, central rays: thickness / cos(angle) ~ thickness
    img = render(mu, sp, "pa", size=16, detector_mm=80, method=method, n_samples=64)
    assert abs(float(img[7:9, 7:9].mean()) - mu_val * 100.0) < 1e-3


@pytest.mark.parametrize("view", VIEWS)
def test_slices_and_raymarch_agree(view):
    g = torch.Generator().manual_seed(0)
    mu = torch.rand(24, 28, 20, generator=g) * 0.03
    sp = (2.0, 1.5, 2.5)
    kw = dict(size=48, sid_mm=800.0, iso_to_detector_mm=100.0, detector_mm=120.0, center_offset_mm=(3.0, -2.0, 4.0))
    a = render(mu, sp, view, method="slices", **kw)
    b = render(mu, sp, view, method="raymarch", n_samples=512, **kw)
    # white noise is the worst case for plane sampling (Joseph) vs trilinear marching
    assert (a - b).abs().max() < 0.05 * a.max() and (a - b).abs().mean() < 0.005 * a.max()


def test_rotated_pa_equals_lateral():
    mu = ball(SHAPE, SP, (10, 20, -5), 12) + ball(SHAPE, SP, (-15, -10, 10), 6, mu=0.05)
    kw = dict(size=48, detector_mm=200.0)
    lat = render(mu, SP, "lateral", **kw)
    rot = render(mu, SP, "pa", rotation_deg=-90.0, n_samples=200, **kw)
    assert (lat - rot).abs().max() < 0.03 * lat.max()


def test_prepare_volume_pools_and_keeps_integrals():
    mu = ball((64, 64, 32), (1.0, 1.0, 2.0), (0, 0, 0), 20)
    pv = prepare_volume(mu, (1.0, 1.0, 2.0), target_spacing_mm=2.0)
    assert pv.mu.shape == (32, 32, 32) and pv.spacing_mm == (2.0, 2.0, 2.0)
    full, pooled = render(mu, (1.0, 1.0, 2.0), size=32), render(pv, size=32)
    assert abs(float(full.sum()) - float(pooled.sum())) < 0.02 * float(full.sum())


def test_hu_to_mu():
    hu = torch.tensor([-2048.0, -1000.0, 0.0, 1000.0])
    assert torch.allclose(hu_to_mu(hu), torch.tensor([0.0, 0.0, 0.02, 0.04]))
    assert hu_to_mu(hu, bone_boost=1.0)[3] > 0.04


def test_to_radiograph_range_dtype_determinism_and_density():
    li = torch.linspace(0, 4, 64 * 64).reshape(64, 64)
    kw = dict(blur_sigma_px=1.0, noise_std=0.05)
    a = to_radiograph(li, generator=torch.Generator().manual_seed(1), **kw)
    b = to_radiograph(li, generator=torch.Generator().manual_seed(1), **kw)
    c = to_radiograph(li, generator=torch.Generator().manual_seed(2), **kw)
    assert a.dtype == torch.float32 and a.shape == li.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    clean = to_radiograph(li)
    assert clean[-1, -1] > clean[0, 0]  # dense (large integral) is bright
    u8 = to_uint8(clean)
    assert u8.dtype == torch.uint8 and int(u8.max()) == 255 and int(u8.min()) == 0
    batch = to_radiograph(torch.stack([li, 2 * li]))
    assert batch.shape == (2, 64, 64)


def test_wrong_inputs_give_clear_errors():
    mu = torch.zeros(8, 8, 8)
    with pytest.raises(ValueError, match=r"\(X, Y, Z\)"):
        render(torch.zeros(1, 8, 8, 8), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        render(mu, (1.0, 1.0))
    with pytest.raises(ValueError, match="view"):
        render(mu, (1, 1, 1), view="oblique")
    with pytest.raises(ValueError, match="rotation_deg"):
        render(mu, (1, 1, 1), rotation_deg=10.0, method="slices")
    with pytest.raises(ValueError, match="line_integrals"):
        to_radiograph(torch.zeros(8))
