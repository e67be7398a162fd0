"""What the view-fusion weights of held-out studies say (chapter 03): the total weight on the frontal
and the lateral film(s) of a study, the pre-trained fusion beside an untrained one on the same view
features, the mean weight of each slot, and how far the weights are from uniform (their entropy).

A study is a dict with ``views`` (the view name in each of its slots: frontal, lateral or unknown),
``weights`` (the fusion weight of each slot) and ``n_images`` (its distinct films)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

VIEWS = ("frontal", "lateral", "unknown")


def view_totals(views: Sequence[str], weights: Sequence[float]) -> dict[str, float]:
    """Total weight on each view of a study (a film in two slots counts twice)."""
    out = {v: 0.0 for v in VIEWS}
    for v, w in zip(views, weights):
        out[v] += float(w)
    return out


def frontal_weights(studies: Sequence[Mapping], untrained_weights: np.ndarray) -> pd.DataFrame:
    """One row per two-image study (frontal + lateral, one of them repeated in the third slot): which
    film is repeated, and the total weight on the frontal film by the pre-trained fusion (the study's
    ``weights``) and by an untrained fusion (``untrained_weights``, studies x slots, in the same
    order as ``studies``)."""
    rows = []
    for s, w0 in zip(studies, untrained_weights):
        if s["n_images"] != 2:
            continue
        rows.append({
            "repeated film": s["views"][2],
            "frontal weight (pre-trained)": view_totals(s["views"], s["weights"])["frontal"],
            "frontal weight (untrained fusion)": view_totals(s["views"], w0)["frontal"],
        })
    return pd.DataFrame(rows, columns=["repeated film", "frontal weight (pre-trained)",
                                       "frontal weight (untrained fusion)"])


def weight_entropy(weights: np.ndarray) -> np.ndarray:
    """The entropy of each study's fusion weights (studies x V) divided by log V: 1 is uniform, 0 is
    all the weight on one slot."""
    weights = np.asarray(weights)
    return -(weights * np.log(np.clip(weights, 1e-12, 1))).sum(1) / np.log(weights.shape[1])


def slot_means(weights: np.ndarray, untrained_weights: np.ndarray) -> pd.DataFrame:
    """The mean weight of each slot over all studies, pre-trained beside untrained fusion."""
    return pd.DataFrame(
        {"pre-trained": np.asarray(weights).mean(0),
         "untrained fusion": np.asarray(untrained_weights).mean(0)},
        index=[f"slot {j + 1}" for j in range(np.asarray(weights).shape[1])],
    )
