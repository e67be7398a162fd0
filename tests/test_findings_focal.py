"""Focal, mediastinal and device findings (refers_lite.data.synthesis.findings.focal / .mediastinum / .devices).

One patient anatomy for the module; lesions are memoised per (finding, side, zone, severity, seed)
and projected at 128 px, so the whole file stays fast.  Skips when the chest CT asset is missing.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from refers_lite.data.synthesis.findings import FINDINGS, devices, focal, make_finding, mediastinum
from refers_lite.data.synthesis.findings.base import SIDES, ZONES, box_from_projection
from findings_helpers import first_side, lesions, patient_or_skip

SIZE = 128
SPECS = {s.name: s for s in focal.SPECS + mediastinum.SPECS + devices.SPECS}
NAMES = sorted(SPECS)
EXPECTED = {"nodule", "mass", "calcified_granuloma", "calcification", "lung_opacity", "other_lesion",
            "cardiomegaly", "aortic_enlargement", "hiatal_hernia", "catheter", "degenerative_spine"}
LUNG_LESIONS = ("nodule", "mass", "calcified_granuloma", "lung_opacity")
LATERAL_SIDES = [n for n in NAMES if {"left", "right"} <= set(SPECS[n].sides)]


@pytest.fixture(scope="module")
def patient():
    return patient_or_skip(7)


def com_mm(anat, les, axis: int) -> float:
    """Centre of mass (mm, patient frame) of |delta_mu| along ``axis`` (0: x, + = left; 2: z, + = up)."""
    w = les.delta_mu.abs()
    other = tuple(a for a in range(3) if a != axis)
    i = torch.arange(les.delta_mu.shape[axis], dtype=torch.float32) + les.origin[axis]
    c = (i + 0.5) * anat.spacing_mm[axis] - anat.shape[axis] * anat.spacing_mm[axis] / 2
    return float((w.sum(other) * c).sum() / w.sum())


def mass(anat, lesions_) -> float:
    return sum(float(l.delta_mu.abs().sum()) for l in lesions_) * math.prod(anat.spacing_mm)


def test_registry_has_every_focal_finding():
    assert set(SPECS) == EXPECTED
    for name, spec in SPECS.items():
        assert FINDINGS[name] is spec
        assert set(spec.sides) <= set(SIDES) and set(spec.zones) <= set(ZONES)


@pytest.mark.parametrize("name", NAMES)
def test_seeded_and_valid(patient, name):
    a = lesions(patient, name, seed=3)
    b = make_finding(name, patient, np.random.default_rng(3))
    assert len(a) == len(b) >= 1
    for la, lb in zip(a, b):
        assert la.finding == name and la.origin == lb.origin and torch.equal(la.delta_mu, lb.delta_mu)
        assert la.side in SPECS[name].sides and la.zone in SPECS[name].zones
        assert torch.isfinite(la.delta_mu).all()
    c = lesions(patient, name, seed=4)
    assert any(la.origin != lc.origin or la.delta_mu.shape != lc.delta_mu.shape or not torch.equal(la.delta_mu, lc.delta_mu)
               for la, lc in zip(a, c)) or len(a) != len(c)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("view", ["pa", "lateral"])
def test_projection_box_holds_the_change(patient, name, view):
    for les in lesions(patient, name, side=first_side(SPECS[name]), seed=1):
        d = les.project(patient, view, size=SIZE)
        assert float(d.abs().max()) > 1e-3
        box = box_from_projection(d)
        assert box is not None
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        inside = float(d[y0:y1, x0:x1].abs().sum()) / float(d.abs().sum())
        # a 3-8 mm granuloma is one or two 3.4 mm pixels here, so its blur tails weigh more
        assert inside > (0.8 if name == "calcified_granuloma" else 0.85), (name, view, inside)


@pytest.mark.parametrize("name", LATERAL_SIDES)
def test_side_is_respected(patient, name):
    spec = SPECS[name]
    zone = "middle" if name == "calcification" else None  # hilar nodes; the aortic knob is midline/upper
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for les in lesions(patient, name, side=side, zone=zone, seed=2):
            assert les.side == side
            if name == "catheter":  # the line ends in the (right-sided) SVC whatever the side of insertion
                x = les.attrs["entry_mm"][0] - focal.organ_centroid(patient, "trachea")[0]
            else:
                x = com_mm(patient, les, 0)
            assert x * sign > 0, (name, side, x)
            box = box_from_projection(les.project(patient, "pa", size=SIZE))
            if name != "catheter":  # PA shows the patient's left on the image's right
                assert ((box[0] + box[2]) / 2 - SIZE / 2) * sign > 0, (name, side, box)
    assert set(spec.sides) >= {"left", "right"}


@pytest.mark.parametrize("name", LUNG_LESIONS)
@pytest.mark.parametrize("zone", ["upper", "lower"])
def test_lung_lesions_lie_inside_the_lung_zone(patient, name, zone):
    lung = patient.organ("lung")
    k_lo, k_hi = focal.zone_z_range(patient, "right", zone)
    for les in lesions(patient, name, side="right", zone=zone, seed=5):
        i, j, k = les.origin
        x, y, z = les.delta_mu.shape
        w = les.delta_mu.abs()
        occ = float((w * lung[i:i + x, j:j + y, k:k + z]).sum() / w.sum())
        assert occ > (0.8 if name == "mass" else 0.9), (name, occ)
        centre_k = patient.mm_to_index(les.attrs["center_mm"])[2]
        assert k_lo - 0.5 <= centre_k <= k_hi + 0.5
        assert com_mm(patient, les, 0) < 0


@pytest.mark.parametrize("name", NAMES)
def test_severity_orders_the_change(patient, name):
    side = first_side(SPECS[name])
    mild = mass(patient, lesions(patient, name, side=side, severity="mild", seed=6))
    severe = mass(patient, lesions(patient, name, side=side, severity="severe", seed=6))
    assert severe > mild > 0, (name, mild, severe)


@pytest.mark.parametrize("name", NAMES)
def test_invalid_requests_raise(patient, name):
    spec = SPECS[name]
    rng = np.random.default_rng(0)
    bad_side = next(s for s in SIDES + ("nowhere",) if s not in spec.sides)
    with pytest.raises(ValueError):
        spec.make(patient, rng, side=bad_side)
    bad_zone = next(z for z in ZONES + ("nowhere",) if z not in spec.zones)
    with pytest.raises(ValueError):
        spec.make(patient, rng, zone=bad_zone)
    with pytest.raises(ValueError):
        spec.make(patient, rng, severity="extreme")


def test_nodule_and_mass_sizes(patient):
    for sev, (lo, hi) in (("mild", (5, 12)), ("moderate", (12, 20)), ("severe", (20, 30))):
        (les,) = lesions(patient, "nodule", severity=sev, seed=8)
        assert lo <= les.attrs["diameter_mm"] <= hi
        assert abs(float((les.delta_mu + 0).max())) < 0.03  # soft tissue, not calcium
    for sev in ("mild", "moderate", "severe"):
        (les,) = lesions(patient, "mass", severity=sev, seed=8)
        assert les.attrs["diameter_mm"] > 30


def test_calcified_granulomas_are_calcium_dense(patient):
    out = lesions(patient, "calcified_granuloma", severity="severe", seed=9)
    assert 2 <= len(out) <= 4
    for les in out:
        assert 2 <= les.attrs["diameter_mm"] <= 8
        mu_after = patient.with_lesions([les])[les.origin[0]:les.origin[0] + les.delta_mu.shape[0],
                                               les.origin[1]:les.origin[1] + les.delta_mu.shape[1],
                                               les.origin[2]:les.origin[2] + les.delta_mu.shape[2]]
        assert float(mu_after.max()) > 0.06  # denser than ribs (~0.03)


def test_calcification_sites(patient):
    (knob,) = lesions(patient, "calcification", side="midline", seed=1)
    assert knob.attrs["site"] == "aortic_arch" and knob.zone == "upper"
    assert float(knob.delta_mu.min()) >= 0
    # on the arch: above the heart, left of the trachea, a thin rim (small volume)
    assert com_mm(patient, knob, 2) > focal.organ_centroid(patient, "heart")[2] + 30
    assert com_mm(patient, knob, 0) > focal.organ_centroid(patient, "trachea")[0]
    (node,) = lesions(patient, "calcification", side="right", zone="upper", seed=1)
    assert node.attrs["site"] == "paratracheal_node"


def test_lung_opacity_is_ill_defined_and_never_lowers_attenuation(patient):
    (les,) = lesions(patient, "lung_opacity", seed=2)
    d = les.delta_mu
    assert float(d.min()) >= 0
    # ill-defined: many voxels in the fading margin compared with the dense core
    core = float((d > 0.6 * float(d.max())).sum())
    margin = float(((d > 0.02 * float(d.max())) & (d < 0.3 * float(d.max()))).sum())
    assert margin > core


def test_other_lesion_kinds(patient):
    kinds = {lesions(patient, "other_lesion", seed=s)[0].attrs["kind"] for s in range(6)}
    assert kinds == {"rib_callus", "extrapleural"}
    ribs = patient.organ("ribs")
    for s in range(6):
        (les,) = lesions(patient, "other_lesion", seed=s)
        i, j, k = les.origin
        x, y, z = les.delta_mu.shape
        assert float(ribs[i:i + x, j:j + y, k:k + z].max()) > 0.5  # at a rib


def test_cardiomegaly_raises_the_cardiothoracic_ratio(patient):
    ctr0 = mediastinum.cardiothoracic_ratio(patient)
    ctrs = []
    for sev in ("mild", "moderate", "severe"):
        (les,) = lesions(patient, "cardiomegaly", severity=sev, seed=0)
        assert les.attrs["ctr_before"] == pytest.approx(ctr0)
        ctrs.append(les.attrs["ctr"])
        assert float(les.delta_mu.min()) >= 0  # heart density replaces lung / fat
    assert ctr0 < ctrs[0] < ctrs[1] < ctrs[2]
    assert ctrs[1] > 0.55 and ctrs[2] > 0.62
    (les,) = lesions(patient, "cardiomegaly", severity="severe", seed=0)
    assert com_mm(patient, les, 0) > focal.organ_centroid(patient, "heart")[0]  # grows mostly to the left


def test_aortic_enlargement_grows_the_arch_to_the_left(patient):
    (les,) = lesions(patient, "aortic_enlargement", seed=0)
    assert float(les.delta_mu.min()) >= 0
    aorta = patient.organ("aorta")
    i, j, k = les.origin
    x, y, z = les.delta_mu.shape
    w = les.delta_mu
    assert float((w * aorta[i:i + x, j:j + y, k:k + z]).sum() / w.sum()) < 0.2  # outside the old lumen
    assert com_mm(patient, les, 0) > focal.organ_centroid(patient, "aorta")[0]


def test_hiatal_hernia_air_fluid_level(patient):
    seen = False
    for s in range(5):
        (les,) = lesions(patient, "hiatal_hernia", seed=s)
        heart = focal.organ_centroid(patient, "heart")
        c = les.attrs["center_mm"]
        assert c[1] < heart[1] and c[2] < heart[2] + 20  # behind the heart, low
        if les.attrs["air_fluid_level"]:
            seen = True
            d = les.delta_mu
            z = torch.arange(d.shape[2], dtype=torch.float32)
            neg, pos = (d < -0.005).float(), (d > 0.005).float()
            z_air = float((neg.sum((0, 1)) * z).sum() / neg.sum())
            z_fluid = float((pos.sum((0, 1)) * z).sum() / pos.sum())
            assert z_air > z_fluid  # gas above, fluid below
    assert seen


def test_catheter_runs_to_the_cavo_atrial_junction(patient):
    from refers_lite.data.synthesis.findings.focal import organ_bbox

    (_, _), (_, _), (k0, _) = organ_bbox(patient, "svc")
    svc_bottom_z = patient.index_to_mm((0, 0, k0))[2]
    routes = set()
    for s in range(4):
        (les,) = lesions(patient, "catheter", seed=s)
        routes.add(les.attrs["route"])
        tip = les.attrs["tip_mm"]
        assert abs(tip[2] - svc_bottom_z) < 15.0
        assert les.attrs["entry_mm"][2] > tip[2] + 60.0  # enters high, near the clavicle / neck
        assert 0.1 <= les.attrs["mu"] <= 0.2 and float(les.delta_mu.max()) < 0.2
        assert 150.0 < les.attrs["length_mm"] < 400.0
    assert routes == {"subclavian", "jugular"}


def test_degenerative_spine_spurs_sit_on_the_spine(patient):
    (les,) = lesions(patient, "degenerative_spine", severity="severe", seed=0)
    assert les.attrs["levels"] >= 3
    d = les.delta_mu
    assert float(d.min()) >= 0 and float(d.max()) > 0.005
    i, j, k = les.origin
    x, y, z = d.shape
    dist = patient.distance_outside_mm("spine")[i:i + x, j:j + y, k:k + z]
    assert float(dist[d > 1e-3].max()) < 18.0  # bony spurs at the vertebral margins (discs are not in the mask)
    # anterior (and lateral), not posterior, to the same vertebrae (the whole spine's centroid moves
    # with the thoracic kyphosis and the cervical and lumbar lordoses)
    spine = patient.organ("spine")[:, :, k:k + z]
    spine_y = float((spine * patient.coords_mm()[1][:, :, k:k + z]).sum() / spine.sum())
    assert com_mm(patient, les, 1) > spine_y + 5.0
