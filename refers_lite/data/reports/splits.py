"""Deterministic, seeded train / validation / test splits, made per patient where the patient is known.

:func:`make_splits` groups studies by ``subject_id`` when it is set (so that no patient appears in
two splits: MIMIC-CXR) and by ``study_id`` otherwise (IU X-ray has no patient ids). The groups are
sorted, shuffled by ``numpy.random.default_rng(seed)``, and cut by the fractions (validation and
test get ``round(fraction * n_groups)`` groups, train the rest), so the result depends only on the
set of studies, the fractions and the seed, never on the input order.

:func:`write_splits` / :func:`read_splits` store a split as a CSV with the header ``study_id,split``.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .records import StudyRecord

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """(train, validation, test) fractions as floats; non-negative, finite, summing to 1, else ValueError."""
    if len(fractions) != 3 or any(not np.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"fractions must be three non-negative numbers (train, validation, test), got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions)})")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


def make_splits(records: Iterable[StudyRecord | str], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                seed: int = 0) -> dict[str, list[str]]:
    """``{"train": [study ids], "validation": [...], "test": [...]}``, each list sorted.

    ``records``: StudyRecords (grouped by ``subject_id`` where set) or bare study ids.
    """
    _, f_val, f_test = check_fractions(fractions)
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for r in records:
        study_id, subject = (r, None) if isinstance(r, str) else (r.study_id, r.subject_id)
        if study_id in seen:
            raise ValueError(f"study id {study_id!r} appears twice")
        seen.add(study_id)
        key = f"subject:{subject}" if subject is not None else f"study:{study_id}"
        groups.setdefault(key, []).append(study_id)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    n_val, n_test = round(f_val * len(keys)), round(f_test * len(keys))
    n_val = min(n_val, len(keys))
    n_test = min(n_test, len(keys) - n_val)
    cut = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return {name: sorted(s for i in cut[name] for s in groups[keys[i]]) for name in SPLITS}


def write_splits(splits: dict[str, Iterable[str]], path: str | Path) -> None:
    """Write ``study_id,split`` rows (train, then validation, then test)."""
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split name(s) {sorted(unknown)}; expected {SPLITS}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["study_id", "split"])
        for name in SPLITS:
            for study_id in splits.get(name, []):
                w.writerow([study_id, name])


def read_splits(path: str | Path, id_column: str = "study_id") -> dict[str, list[str]]:
    """Read a file written by :func:`write_splits`; a bad file raises ValueError naming it and the line.

    ``id_column``: the header's first column ("study_id" here; "image_id" for the target domains'
    ``split.csv`` of :mod:`refers_lite.data.loading.label_ratios`).
    """
    path = Path(path)
    noun = id_column.removesuffix("_id")
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    seen: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip() for h in header] != [id_column, "split"]:
                raise ValueError(f"{path}: expected the header '{id_column},split', found {header!r}")
            for line, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 2:
                    raise ValueError(f"{path}, line {line}: expected 2 columns ({id_column},split), got {row!r}")
                item_id, split = row[0].strip(), row[1].strip()
                if not item_id:
                    raise ValueError(f"{path}, line {line}: empty {id_column}")
                if split not in SPLITS:
                    raise ValueError(f"{path}, line {line}: unknown split {split!r}; expected one of {SPLITS}")
                if item_id in seen:
                    raise ValueError(f"{path}, line {line}: {noun} {item_id!r} already listed on line {seen[item_id]}")
                seen[item_id] = line
                out[split].append(item_id)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from e
    return out
