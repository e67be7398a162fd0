"""Shared by the findings tests: one patient per test module, memoised lesions."""
from __future__ import annotations

import numpy as np
import pytest

from refers_lite.data.assets import AssetMissingError
from refers_lite.data.synthesis.findings import make_finding


def patient_or_skip(seed: int):
    """A patient deformed from the fetched CT; skips the test when the CT asset is missing."""
    from refers_lite.data.synthesis.anatomy import load_base_anatomy, make_patient

    try:
        base = load_base_anatomy()
    except AssetMissingError as e:
        pytest.skip(f"chest CT asset missing: {e}")
    return make_patient(base, seed)


_MEMO: dict = {}


def lesions(anat, name, side=None, zone=None, severity="moderate", seed=0):
    key = (id(anat), name, side, zone, severity, seed)
    if key not in _MEMO:
        _MEMO[key] = make_finding(name, anat, np.random.default_rng(seed), side=side, zone=zone, severity=severity)
    return _MEMO[key]


def first_side(spec):
    return "left" if "left" in spec.sides else spec.sides[0]
