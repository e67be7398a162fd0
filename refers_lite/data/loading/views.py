"""Which views of a study go into the model (Methods 4.2).

"For studies that contain fewer than three radiographs, we randomly select one of the
radiographs, and then repeat it once or twice to have a total of three views. For studies that
contain more than three radiographs, we randomly select three of them."

So: with n >= k images, k distinct ones are drawn without replacement (the official code draws
with replacement); with n < k, all n are kept and one of them, chosen at random, fills the
remaining k - n slots.
"""
from __future__ import annotations

import numpy as np


def sample_views(n_available: int, k: int, rng: np.random.Generator) -> list[int]:
    if n_available < 1:
        raise ValueError("a study needs at least one image")
    if k < 1:
        raise ValueError("k must be >= 1")
    if n_available >= k:
        return [int(i) for i in rng.choice(n_available, size=k, replace=False)]
    fill = int(rng.integers(n_available))
    return list(range(n_available)) + [fill] * (k - n_available)
