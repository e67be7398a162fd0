"""Chest findings in 3D, placed with the patient's organ masks (see :mod:`.base` for the contract).

``FINDINGS`` maps a finding name to its :class:`~.base.FindingSpec`; each module of this package
(pleura, parenchyma, focal, mediastinum, devices) lists its own in ``SPECS``.

    from refers_lite.data.synthesis.findings import FINDINGS, make_finding
    lesions = make_finding("pleural_effusion", anatomy, np.random.default_rng(0), side="left", severity="mild")
"""
from __future__ import annotations

import importlib

import numpy as np

from ..anatomy import Anatomy, Lesion
from .base import FindingSpec

__all__ = ["FINDINGS", "FindingSpec", "make_finding"]

_MODULES = ("pleura", "parenchyma", "focal", "mediastinum", "devices")


def _collect() -> dict[str, FindingSpec]:
    out: dict[str, FindingSpec] = {}
    for name in _MODULES:
        mod = importlib.import_module(f"{__name__}.{name}")  # every one exists: a failing import is an error
        for spec in getattr(mod, "SPECS", ()):
            if spec.name in out:
                raise ValueError(f"finding {spec.name!r} registered twice ({name})")
            out[spec.name] = spec
    return out


FINDINGS: dict[str, FindingSpec] = _collect()


def make_finding(name: str, anatomy: Anatomy, rng: np.random.Generator, *, side: str | None = None,
                 zone: str | None = None, severity: str = "moderate") -> list[Lesion]:
    """Lesions of finding ``name`` (see :data:`FINDINGS`), each checked against the anatomy grid."""
    if name not in FINDINGS:
        raise KeyError(f"unknown finding {name!r}; known: {sorted(FINDINGS)}")
    lesions = FINDINGS[name].make(anatomy, rng, side=side, zone=zone, severity=severity)
    for les in lesions:
        les.check(anatomy)
    return lesions
