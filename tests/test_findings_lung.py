"""Pleural and parenchymal findings (refers_lite.data.synthesis.findings.pleura / .parenchyma) on one patient.

One patient anatomy for the module; lesions are memoised per (finding, side, zone, severity, seed)
and projected at 128 px, so the whole file stays fast.  Skips when the chest CT asset is missing.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from refers_lite.data.synthesis.findings import FINDINGS, make_finding
from refers_lite.data.synthesis.findings import parenchyma, pleura
from refers_lite.data.synthesis.findings.base import SEVERITIES, SIDES, ZONES, box_from_projection
from findings_helpers import first_side, lesions, patient_or_skip

SIZE = 128
SPECS = {s.name: s for s in pleura.SPECS + parenchyma.SPECS}
NAMES = sorted(SPECS)
EXPECTED = {"pleural_effusion", "pneumothorax", "pleural_thickening", "consolidation", "pneumonia", "atelectasis",
            "edema", "infiltration", "fibrosis", "emphysema", "ground_glass_covid", "viral_pneumonia", "tuberculosis"}


@pytest.fixture(scope="module")
def patient():
    return patient_or_skip(11)


def x_com_mm(anat, les) -> float:
    """x (mm, + = patient left) centre of mass of |delta_mu|."""
    w = les.delta_mu.abs()
    i = torch.arange(les.delta_mu.shape[0], dtype=torch.float32) + les.origin[0]
    x = (i + 0.5) * anat.spacing_mm[0] - anat.shape[0] * anat.spacing_mm[0] / 2
    return float((w.sum((1, 2)) * x).sum() / w.sum())


def test_registry_has_every_lung_finding():
    assert set(SPECS) == EXPECTED
    for name, spec in SPECS.items():
        assert FINDINGS[name] is spec
        assert spec.sides and set(spec.sides) <= set(SIDES), name
        assert spec.zones and set(spec.zones) <= set(ZONES), name
        assert spec.description
    assert SPECS["emphysema"].sides == ("bilateral",) and SPECS["emphysema"].zones == ("diffuse",)
    assert set(SPECS["pneumothorax"].sides) == {"left", "right"}
    assert set(SPECS["pleural_effusion"].sides) == {"left", "right", "bilateral"}


def test_a_findings_module_that_fails_to_import_is_an_error(monkeypatch):
    """Issue 17: the registry never skips a module silently (a missing one would drop its findings)."""
    import refers_lite.data.synthesis.findings as findings_pkg
    monkeypatch.setattr(findings_pkg, "_MODULES", findings_pkg._MODULES + ("not_written_yet",))
    with pytest.raises(ModuleNotFoundError, match="not_written_yet"):
        findings_pkg._collect()


@pytest.mark.parametrize("name", NAMES)
def test_seeded_and_deterministic(patient, name):
    spec = SPECS[name]
    side, zone = first_side(spec), spec.zones[0]
    a = make_finding(name, patient, np.random.default_rng(7), side=side, zone=zone)
    b = make_finding(name, patient, np.random.default_rng(7), side=side, zone=zone)
    c = lesions(patient, name, side, zone, seed=8)
    assert len(a) == len(b) >= 1
    for la, lb in zip(a, b):
        assert la.origin == lb.origin and torch.equal(la.delta_mu, lb.delta_mu)
        assert la.finding == name and la.severity == "moderate"
    assert any(la.origin != lc.origin or la.delta_mu.shape != lc.delta_mu.shape
               or not torch.equal(la.delta_mu, lc.delta_mu) for la, lc in zip(a, c))


@pytest.mark.parametrize("name", NAMES)
def test_projection_box_and_mass_inside(patient, name):
    spec = SPECS[name]
    for les in lesions(patient, name, first_side(spec), spec.zones[0]):
        for view in ("pa", "lateral"):
            li = les.project(patient, view, size=SIZE)
            assert li.shape == (SIZE, SIZE) and torch.isfinite(li).all()
            assert float(li.abs().max()) > 1e-3, (name, view)
            box = box_from_projection(li)
            assert box is not None, (name, view)
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            mag = li.abs()
            inside = float(mag[y0:y1, x0:x1].sum()) / float(mag.sum())
            assert inside > 0.8, (name, view, inside)


@pytest.mark.parametrize("name", NAMES)
def test_attenuation_is_replaced_not_glowing(patient, name):
    """Lesions keep attenuation physical: never below air, never denser than ~water unless it was."""
    spec = SPECS[name]
    for les in lesions(patient, name, first_side(spec), spec.zones[0], severity="severe"):
        i, j, k = les.origin
        x, y, z = les.delta_mu.shape
        mu = patient.mu[i:i + x, j:j + y, k:k + z]
        new = mu + les.delta_mu
        assert float(new.min()) >= -1e-6, name
        assert bool((new <= torch.clamp(mu, min=0.025) + 1e-5).all()), name


@pytest.mark.parametrize("name", [n for n in NAMES if {"left", "right"} <= set(SPECS[n].sides)])
def test_side_is_respected(patient, name):
    zone = SPECS[name].zones[0]
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for les in lesions(patient, name, side, zone, seed=3):
            assert les.side == side
            assert sign * x_com_mm(patient, les) > 10.0, (name, side)
            box = box_from_projection(les.project(patient, "pa", size=SIZE))
            cx = (box[0] + box[2]) / 2
            # PA images show the patient's right on the image's left
            assert (cx > SIZE / 2) if side == "left" else (cx < SIZE / 2), (name, side, box)


@pytest.mark.parametrize("name", [n for n in NAMES if "bilateral" in SPECS[n].sides])
def test_bilateral_reaches_both_lungs(patient, name):
    les = lesions(patient, name, "bilateral", SPECS[name].zones[0], seed=4)
    sides = set()
    for le in les:
        w = le.delta_mu.abs()
        i = torch.arange(w.shape[0], dtype=torch.float32) + le.origin[0]
        x = (i + 0.5) * patient.spacing_mm[0] - patient.shape[0] * patient.spacing_mm[0] / 2
        per_x = w.sum((1, 2))
        left, right = float(per_x[x > 20].sum()), float(per_x[x < -20].sum())
        if left > 0.1 * (left + right):
            sides.add("left")
        if right > 0.1 * (left + right):
            sides.add("right")
    assert sides == {"left", "right"}, (name, sides)


@pytest.mark.parametrize("name", NAMES)
def test_severity_orders_attenuation_change(patient, name):
    spec = SPECS[name]
    side, zone = first_side(spec), spec.zones[0]
    mass = {s: sum(float(le.delta_mu.abs().sum()) for le in lesions(patient, name, side, zone, severity=s, seed=5))
            for s in ("mild", "severe")}
    assert mass["severe"] > 1.3 * mass["mild"] > 0, (name, mass)


@pytest.mark.parametrize("name", NAMES)
def test_every_declared_zone_works_and_invalid_choices_raise(patient, name):
    spec = SPECS[name]
    for zone in spec.zones:
        les = lesions(patient, name, first_side(spec), zone, severity="mild", seed=6)
        assert les and all(le.zone == zone and float(le.delta_mu.abs().sum()) > 0 for le in les)
    bad_side = next(s for s in SIDES + ("up",) if s not in spec.sides)
    bad_zone = next((z for z in ZONES if z not in spec.zones), "nowhere")
    with pytest.raises(ValueError):
        make_finding(name, patient, np.random.default_rng(0), side=bad_side)
    with pytest.raises(ValueError):
        make_finding(name, patient, np.random.default_rng(0), zone=bad_zone)
    with pytest.raises(ValueError):
        make_finding(name, patient, np.random.default_rng(0), severity="extreme")
    assert set(SEVERITIES) == {"mild", "moderate", "severe"}


def test_effusion_is_dependent_with_meniscus(patient):
    """Fluid fills the lowest lung first; the fluid top is higher at the lateral wall than medially."""
    (les,) = lesions(patient, "pleural_effusion", "right", severity="moderate", seed=1)
    d = les.delta_mu
    assert float(d.clamp(max=0).sum()) > -0.01 * float(d.clamp(min=0).sum())  # fluid replaces aerated lung
    filled = d > 0.008
    k = torch.nonzero(filled.any(0).any(0)).flatten()
    top = int(k.max())
    lung = patient.organ("lung_right")[les.origin[0]:les.origin[0] + d.shape[0],
                                       les.origin[1]:les.origin[1] + d.shape[1],
                                       les.origin[2]:les.origin[2] + d.shape[2]]
    # the lowest lung is full, and the fluid stops well below the lung's top
    low = lung[:, :, : max(2, int(k.min()) + 2)] > 0.9
    assert float(filled[:, :, : low.shape[2]][low].float().mean()) > 0.9
    assert top + les.origin[2] < patient.bbox_index("lung_right")[2][1] - 10
    # meniscus: per x column, the highest filled z rises towards the lateral wall (low x on the right)
    heights = [int(torch.nonzero(filled[i].any(0)).max()) if bool(filled[i].any()) else -1 for i in range(d.shape[0])]
    xs = [i for i, h in enumerate(heights) if h >= 0]
    lateral = np.mean([heights[i] for i in xs[: max(1, len(xs) // 5)]])
    medial = np.mean([heights[i] for i in xs[len(xs) // 2: len(xs) // 2 + max(1, len(xs) // 5)]])
    # (at full inspiration the lateral recess runs deep, so the rise measured per column is ~1-2 voxels)
    assert lateral > medial + 1, (lateral, medial)


def test_pneumothorax_has_air_rim_and_pleural_line(patient):
    (les,) = lesions(patient, "pneumothorax", "left", "diffuse", severity="moderate", seed=2)
    i, j, k = les.origin
    x, y, z = les.delta_mu.shape
    mu = patient.mu[i:i + x, j:j + y, k:k + z]
    lung = patient.organ("lung_left")[i:i + x, j:j + y, k:k + z]
    new = mu + les.delta_mu
    inner = lung > 0.95
    air = inner & (new < 2e-4)  # pleural air: no lung markings
    assert int(air.sum()) > 500
    # the retracted lung still has its markings (not air) and is at least as dense as before on average
    kept = inner & (new > 1e-3)
    assert int(kept.sum()) > 5 * int(air.sum()) // 10
    # the PA projection darkens (less attenuation) near the apex of the left lung
    li = les.project(patient, "pa", size=SIZE)
    assert float(li.min()) < -0.05


def test_emphysema_lowers_density_and_flattens_the_diaphragm(patient):
    lungs, domes = lesions(patient, "emphysema", severity="severe", seed=1)
    assert lungs.attrs["part"] == "hyperlucent lungs" and domes.attrs["part"] == "flattened diaphragm"

    def crop(les, organ):
        i, j, k = les.origin
        x, y, z = les.delta_mu.shape
        return patient.organ(organ)[i:i + x, j:j + y, k:k + z]

    assert float(lungs.delta_mu[crop(lungs, "lung") > 0.95].mean()) < 0  # hyperlucent lung
    d = domes.delta_mu
    assert float(d.max()) <= 1e-6 and int((d < -0.005).sum()) > 200  # tissue under the domes becomes lung
    assert float((d.abs() * (crop(domes, "heart") > 0.5)).max()) < 1e-6  # never the heart
    # the new lung lies below the old lung, within the lungs' footprint, at the bottom of the chest
    zs = torch.nonzero(d < -0.005)[:, 2] + domes.origin[2]
    assert float(zs.float().mean()) < patient.bbox_index("lung")[2][0] + 0.4 * (
        patient.bbox_index("lung")[2][1] - patient.bbox_index("lung")[2][0])


def test_pneumonia_stays_in_its_lobe(patient):
    (les,) = lesions(patient, "pneumonia", "right", "upper", severity="severe", seed=1)
    i, j, k = les.origin
    x, y, z = les.delta_mu.shape
    lobe = patient.organ("lung_upper_right")[i:i + x, j:j + y, k:k + z]
    w = les.delta_mu.clamp_min(0)
    assert float((w * lobe).sum()) / float(w.sum()) > 0.9
