"""Target-domain splits (70/10/20) and nested label-ratio subsets of the training split (1%, 10%, 100%).

REFERS (Zhou et al., 2022) splits every target domain into 70% train, 10% validation and 20% test,
and fine-tunes on 1%, 10% and 100% of the training split; we repeat with seeds 0, 1 and 2.

:func:`split_items` cuts a domain into the three splits. It is deterministic given the *set* of ids
(their order does not matter), keeps each group (a patient) inside one split, and with labels
stratifies greedily (iterative stratification, Sechidis et al. 2011: the rarest class first, each of
its items to the split that lacks the class or wants it most) so that every split gets every class
where the counts allow. Without groups the sizes are exact: ``round(0.1 * n)`` validation,
``round(0.2 * n)`` test, the rest train.

:func:`ratio_subsets` draws, per seed, one ordering of the training ids and takes its prefixes, so
the subsets are nested (1% within 10% within 100%). The ordering starts with one item per class,
rarest class first, so even a 1% subset holds every class it has room for.

:func:`write_split_files` / :func:`read_split_files` store them as ``split.csv`` (``image_id,split``)
and ``train_{pct}pct_seed{seed}.txt`` (one id per line, sorted).
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ...files import write_if_changed
from ..reports.splits import SPLITS, check_fractions, read_splits

__all__ = ["SPLIT_FRACTIONS", "RATIOS", "SEEDS", "split_items", "ratio_subsets", "ratio_filename",
           "write_split_files", "read_split_files"]

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
RATIOS = (0.01, 0.1, 1.0)
SEEDS = (0, 1, 2)
SPLIT_FILE = "split.csv"
_RATIO_FILE_RE = re.compile(r"^train_(\d+(?:\.\d+)?)pct_seed(\d+)\.txt$")


# ---------------------------------------------------------------------------------------------
# inputs

def _check_ids(ids: Sequence[str]) -> list[str]:
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str) or not i.strip() or i != i.strip() or "\n" in i]
    if bad:
        raise ValueError(f"ids must be non-empty strings without surrounding spaces or newlines; got {bad[0]!r}")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"id {i!r} appears twice")
        seen.add(i)
    return ids


def _check_labels(labels, n: int, binary_negative: bool = True) -> np.ndarray:
    """Labels as a (n, C) 0/1 int array; one column gets its negative class added as a second column."""
    y = np.asarray(labels)
    if y.ndim == 1:
        y = y[:, None]  # (n,) -> (n, 1)
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"labels must have shape (N, C) = ({n}, C) matching the ids, got {np.shape(labels)}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, found values {np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()}")
    y = y.astype(np.int64)
    if binary_negative and y.shape[1] == 1:
        y = np.concatenate([y, 1 - y], axis=1)  # (n, 2): the positive and the negative class
    return y


def _check_ratios(ratios: Sequence[float]) -> list[float]:
    ratios = [float(r) for r in ratios]
    if not ratios or any(not (0 < r <= 1) for r in ratios):
        raise ValueError(f"ratios must be numbers in (0, 1], got {ratios}")
    if len(set(ratios)) != len(ratios):
        raise ValueError(f"ratios repeat: {ratios}")
    return ratios


# ---------------------------------------------------------------------------------------------
# 70/10/20

def split_items(ids: Sequence[str], labels: np.ndarray | None = None, fractions=SPLIT_FRACTIONS, seed: int = 0,
                groups: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``{"train": [...], "validation": [...], "test": [...]}``, each list sorted.

    ``labels``: (N, C) 0/1 aligned with ``ids`` (a single column also stratifies its negative class);
    ``groups``: one group id per item (e.g. the patient); a group never straddles two splits.
    """
    ids = _check_ids(ids)
    fr = check_fractions(fractions)
    n = len(ids)
    y = np.zeros((n, 0), dtype=np.int64) if labels is None else _check_labels(labels, n)  # (N, C)
    if groups is None:
        group_of = ids
    else:
        group_of = [str(g) for g in groups]
        if len(group_of) != n:
            raise ValueError(f"groups has {len(group_of)} entries for {n} ids")
    # units (a group, or an item) in sorted order, so the result depends only on the set of ids
    keys, unit_of = np.unique(np.array(group_of, dtype=str), return_inverse=True)  # (U,), (N,)
    unit_of = unit_of.reshape(-1)
    unit_size = np.bincount(unit_of, minlength=len(keys))  # (U,)
    unit_y = np.zeros((len(keys), y.shape[1]), dtype=np.int64)  # (U, C) positives per unit
    np.add.at(unit_y, unit_of, y)

    n_val, n_test = round(fr[1] * n), round(fr[2] * n)
    n_val = min(n_val, n)
    n_test = min(n_test, n - n_val)
    # plain Python state: one unit at a time is faster this way than with small numpy arrays
    capacity = [n - n_val - n_test, n_val, n_test]  # items each split still wants
    totals = y.sum(0).tolist()  # (C,)
    want = [[f * t for t in totals] for f in fr]  # (3, C) positives each split still wants
    have = [[0] * len(totals) for _ in fr]  # (3, C) units holding each class in each split
    open_split = [f > 0 for f in fr]  # a split meant to be empty never "lacks" a class
    unit_pos: list[list[tuple[int, int]]] = [[] for _ in range(len(keys))]  # (class, positives) per unit
    rows, cols = np.nonzero(unit_y)
    for u, c, v in zip(rows.tolist(), cols.tolist(), unit_y[rows, cols].tolist()):
        unit_pos[u].append((c, v))
    sizes = unit_size.tolist()

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))  # (U,) the order units are visited in
    tiebreak = rng.random((len(keys), 3)).tolist()  # (U, 3) random tie-breaks, fixed by the seed
    assigned = np.full(len(keys), -1, dtype=np.int64)  # (U,)

    def assign(u: int, c: int | None) -> None:
        size = sizes[u]
        room = [cap >= size for cap in capacity]
        if not any(room):  # a group too big for every split: the emptiest one
            room = [cap == max(capacity) for cap in capacity]
        if c is None:
            key = [(room[s], capacity[s], tiebreak[u][s]) for s in range(3)]
        else:
            key = [(room[s], open_split[s] and have[s][c] == 0, want[s][c], capacity[s], tiebreak[u][s])
                   for s in range(3)]
        s = max(range(3), key=key.__getitem__)
        assigned[u] = s
        capacity[s] -= size
        for k, cnt in unit_pos[u]:
            want[s][k] -= cnt
            have[s][k] += 1

    remaining = unit_y > 0  # (U, C)
    todo = np.ones(len(keys), dtype=bool)  # (U,)
    while remaining[todo].any():
        counts = remaining[todo].sum(0)  # (C,) unassigned units holding each class
        c = int(np.argmin(np.where(counts > 0, counts, n + 1)))  # the rarest class left (lowest column on ties)
        for u in order[todo[order] & remaining[order, c]].tolist():
            assign(u, c)
        todo[remaining[:, c]] = False
    for u in order[todo[order]].tolist():  # units with no class left to balance: fill the splits to their sizes
        assign(u, None)
    split_of = assigned[unit_of]  # (N,)
    return {name: sorted(ids[i] for i in np.flatnonzero(split_of == s).tolist()) for s, name in enumerate(SPLITS)}


# ---------------------------------------------------------------------------------------------
# 1% / 10% / 100%

def subset_size(ratio: float, n: int) -> int:
    """Items in a ``ratio`` subset of ``n`` training items: ``max(1, round(ratio * n))``."""
    return min(n, max(1, round(ratio * n)))


def ratio_subsets(train_ids: Sequence[str], labels: np.ndarray, ratios=RATIOS,
                  seeds=SEEDS) -> dict[tuple[float, int], list[str]]:
    """``{(ratio, seed): sorted ids}``: per seed, nested subsets of the training ids.

    Each subset holds every class (column of ``labels``; for a single column also its negative class)
    when its size allows; a subset of k items too small for all holds at least k of them, rarest first.
    """
    ids = _check_ids(train_ids)
    if not ids:
        raise ValueError("ratio_subsets: no training ids")
    ratios = _check_ratios(ratios)
    y = _check_labels(labels, len(ids))  # (N, C)
    order_ids = sorted(range(len(ids)), key=lambda k: ids[k])  # the set of ids decides, not their order
    ids = [ids[k] for k in order_ids]
    y = y[order_ids]
    n = len(ids)
    counts = y.sum(0)  # (C,)
    classes = [c for c in np.argsort(counts, kind="stable") if counts[c] > 0]  # rarest first
    out: dict[tuple[float, int], list[str]] = {}
    for seed in seeds:
        rng = np.random.default_rng(int(seed))
        covered = np.zeros(y.shape[1], dtype=bool)
        taken = np.zeros(n, dtype=bool)
        head: list[int] = []
        for c in classes:  # one random item per class not yet covered, rarest class first
            if covered[c]:
                continue
            candidates = np.flatnonzero(y[:, c].astype(bool) & ~taken)
            pick = int(rng.choice(candidates))
            head.append(pick)
            taken[pick] = True
            covered |= y[pick].astype(bool)
        rest = np.flatnonzero(~taken)
        ordering = head + rest[rng.permutation(len(rest))].tolist()
        for r in ratios:
            out[(r, int(seed))] = sorted(ids[k] for k in ordering[:subset_size(r, n)])
    return out


# ---------------------------------------------------------------------------------------------
# files

def _pct(ratio: float) -> str:
    return f"{round(ratio * 100, 6):g}"


def ratio_filename(ratio: float, seed: int) -> str:
    """``train_{pct}pct_seed{seed}.txt``, e.g. ``train_1pct_seed0.txt`` for (0.01, 0)."""
    return f"train_{_pct(ratio)}pct_seed{int(seed)}.txt"


def _check_consistent(splits: dict[str, list[str]], subsets: dict[tuple[float, int], list[str]],
                      where: dict | None = None, split_where: str = "splits") -> None:
    """No id in two splits, each subset within train, nested per seed, 100% = train; errors name ``where``."""
    where = where or {}
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"{split_where}: unknown split name(s) {sorted(unknown)}; expected {SPLITS}")
    split_of: dict[str, str] = {}
    for name in SPLITS:
        for i in splits.get(name, []):
            if i in split_of:
                raise ValueError(f"{split_where}: id {i!r} is in both {split_of[i]!r} and {name!r}")
            split_of[i] = name
    train = set(splits.get("train", []))
    by_seed: dict[int, list[float]] = {}
    for (r, seed), sub in subsets.items():
        name = where.get((r, seed), f"subset (ratio {r}, seed {seed})")
        if len(set(sub)) != len(sub):
            raise ValueError(f"{name}: lists an id twice")
        outside = [i for i in sub if i not in train]
        if outside:
            i = outside[0]
            raise ValueError(f"{name}: {len(outside)} id(s) not in the train split, e.g. {i!r} "
                             f"(in {split_of[i]!r})" if i in split_of else
                             f"{name}: {len(outside)} id(s) not in the train split, e.g. {i!r} (in no split)")
        if math.isclose(r, 1.0) and set(sub) != train:
            raise ValueError(f"{name}: the 100% subset must be the whole train split "
                             f"({len(sub)} ids, train has {len(train)})")
        by_seed.setdefault(seed, []).append(r)
    for seed, rs in by_seed.items():
        rs.sort()
        for small, big in zip(rs, rs[1:]):
            extra = set(subsets[(small, seed)]) - set(subsets[(big, seed)])
            if extra:
                a = where.get((small, seed), f"subset (ratio {small}, seed {seed})")
                b = where.get((big, seed), f"subset (ratio {big}, seed {seed})")
                raise ValueError(f"{a}: not nested in {b}: {len(extra)} id(s) missing there, e.g. {sorted(extra)[0]!r}")


def write_split_files(out_dir, splits: dict[str, list[str]],
                      subsets: dict[tuple[float, int], list[str]]) -> list[Path]:
    """Write ``split.csv`` and one ``train_{pct}pct_seed{seed}.txt`` per subset; return the paths written.

    Checked first (nothing written on an error). Ratio files in ``out_dir`` that ``subsets`` does not
    name (from an earlier call with other seeds or ratios) are deleted, so the folder reads back as written.
    """
    _check_consistent(splits, subsets)
    names = {key: ratio_filename(*key) for key in subsets}
    if len(set(names.values())) != len(names):
        raise ValueError(f"two subsets map to one file name: {sorted(names.values())}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / SPLIT_FILE
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image_id", "split"])
    for name in SPLITS:
        for i in sorted(splits.get(name, [])):
            w.writerow([i, name])
    write_if_changed(path, buf.getvalue())
    written.append(path)
    for old in out.iterdir():
        if _RATIO_FILE_RE.match(old.name) and old.name not in names.values():
            old.unlink()
    for key in sorted(subsets):
        path = out / names[key]
        write_if_changed(path, "".join(i + "\n" for i in sorted(subsets[key])))
        written.append(path)
    return written


def read_split_files(out_dir) -> tuple[dict[str, list[str]], dict[tuple[float, int], list[str]]]:
    """Read what :func:`write_split_files` wrote; a bad or inconsistent file raises ValueError naming it."""
    out = Path(out_dir)
    splits = read_splits(out / SPLIT_FILE, id_column="image_id")
    subsets: dict[tuple[float, int], list[str]] = {}
    where: dict[tuple[float, int], str] = {}
    for path in sorted(out.iterdir()):
        m = _RATIO_FILE_RE.match(path.name)
        if not m:
            continue
        key = (float(m.group(1)) / 100, int(m.group(2)))
        if not 0 < key[0] <= 1:
            raise ValueError(f"{path}: ratio {m.group(1)}% is not in (0, 100]")
        try:
            ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a UTF-8 text file ({e})") from e
        subsets[key] = [i for i in ids if i]
        where[key] = str(path)
    _check_consistent(splits, subsets, where, split_where=str(out / SPLIT_FILE))
    return splits, subsets
