"""A torch Dataset over one built target domain (images, labels, boxes, splits and label ratios).

A domain directory, as the domain builders write it::

    <root>/domain.json   {"name", "task": "multilabel" | "binary" | "multiclass", "classes": [...],
                          "image_size", "source", "attribution"}
    <root>/cache/        an image cache (refers_lite.data.loading.image_cache) whose index has "image_id" and
                         one 0/1 column per class in domain.json["classes"]
    <root>/boxes.csv     image_id,label,x0,y0,x1,y1 in pixels of the stored image (may hold only the header)
    <root>/splits/       split.csv and train_{1,10,100}pct_seed{0,1,2}.txt (refers_lite.data.loading.label_ratios)

:class:`DomainImages` serves one split: ``"train"`` at a label ratio and seed (the ratio file),
``"validation"`` or ``"test"`` whole. Items are dicts with the image as a (1, H, W) float tensor in
[0, 1]. :func:`read_domain` reads and checks ``domain.json`` against the cache.

Tasks: ``multilabel`` (any number of 0/1 columns per image), ``binary`` (one column: the positive
class) and ``multiclass`` (two or more columns, exactly one 1 per image).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .image_cache import ImageCache, checked_index
from .label_ratios import ratio_filename, read_split_files
from ..reports.splits import SPLITS

__all__ = ["DomainImages", "read_domain", "TASKS", "REQUIRED_KEYS"]

TASKS = ("multilabel", "binary", "multiclass")
REQUIRED_KEYS = ("name", "task", "classes", "image_size", "source", "attribution")
DOMAIN_FILE = "domain.json"
CACHE_DIR = "cache"
BOXES_FILE = "boxes.csv"
SPLITS_DIR = "splits"
BOX_COLUMNS = ["image_id", "label", "x0", "y0", "x1", "y1"]


def _read_meta(root: Path) -> dict:
    """``domain.json`` checked on its own: keys, task, classes, image size."""
    path = root / DOMAIN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not a domain directory: {path} does not exist")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; a domain needs {list(REQUIRED_KEYS)}")
    if meta["task"] not in TASKS:
        raise ValueError(f"{path}: unknown task {meta['task']!r}; expected one of {TASKS}")
    classes = meta["classes"]
    if (not isinstance(classes, list) or not classes
            or any(not isinstance(c, str) or not c.strip() for c in classes)):
        raise ValueError(f"{path}: 'classes' must be a non-empty list of class names, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{path}: 'classes' repeats a name: {classes}")
    if meta["task"] == "binary" and len(classes) != 1:
        raise ValueError(f"{path}: a binary task has one class (the positive one), got {classes}; "
                         f"use task 'multiclass' for one column per class")
    if meta["task"] == "multiclass" and len(classes) < 2:
        raise ValueError(f"{path}: a multiclass task needs at least two classes, got {classes}")
    size = meta["image_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"{path}: 'image_size' must be a positive integer, got {size!r}")
    return meta


def _labels_from_cache(root: Path, meta: dict, cache: ImageCache) -> np.ndarray:
    """Check the cache against ``domain.json``; return the (n_items, C) float32 labels in cache order."""
    path, cpath = root / DOMAIN_FILE, root / CACHE_DIR
    columns = list(cache.index.columns)
    if "image_id" not in columns:
        raise ValueError(f"{cpath}: the image cache index has no 'image_id' column (columns: {columns})")
    missing = [c for c in meta["classes"] if c not in columns]
    if missing:
        raise ValueError(f"{path}: class(es) {missing} have no column in the image cache index of {cpath} "
                         f"(columns: {columns})")
    if cache.image_size != meta["image_size"]:
        raise ValueError(f"{path}: image_size {meta['image_size']} but the cache {cpath} holds "
                         f"{cache.image_size}x{cache.image_size} images")
    ids = cache.index["image_id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ValueError(f"{cpath}: image_id {dup.iloc[0]!r} appears more than once in the cache index")
    raw = cache.index[meta["classes"]]
    y = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)  # (n_items, C)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{cpath}: class column {meta['classes'][c]!r} must hold 0/1, found {raw.iat[r, c]!r} "
                         f"for image {ids.iloc[r]!r}")
    if meta["task"] == "multiclass" and len(y):
        rows = np.flatnonzero(y.sum(1) != 1)
        if len(rows):
            raise ValueError(f"{cpath}: a multiclass domain needs exactly one class per image; image "
                             f"{ids.iloc[rows[0]]!r} has {int(y[rows[0]].sum())}")
    return y.astype(np.float32)


def read_domain(root) -> dict:
    """``domain.json`` of a domain directory, checked against its image cache; errors name the file."""
    root = Path(root)
    meta = _read_meta(root)
    _labels_from_cache(root, meta, ImageCache.open(root / CACHE_DIR, verify=False))
    return meta


def domain_digest(root) -> str:
    """sha256 over what decides a domain's images, labels and splits: the task and classes of ``domain.json``
    (not its build time), the image cache's ``manifest.json`` (its build fingerprint and every shard's sha256),
    ``index.csv`` and the split files. Two folders with the same digest hold the same data; a rebuilt or edited
    domain gets another one, a build that reused everything keeps it."""
    import hashlib
    root = Path(root)
    h = hashlib.sha256()
    meta = _read_meta(root)
    h.update(json.dumps([meta.get("task"), meta.get("classes")]).encode() + b"\0")
    files = [root / CACHE_DIR / "manifest.json", root / CACHE_DIR / "index.csv"]
    files += sorted((root / SPLITS_DIR).glob("*")) if (root / SPLITS_DIR).is_dir() else []
    for path in files:
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class DomainImages(Dataset):
    """One split of a domain; ``split="train"`` takes the (``ratio``, ``seed``) label-ratio subset.

    Items: ``{"image": (1, H, W) float32 in [0, 1] (after ``transform``), "labels": (C,) float32,
    "image_id": str, "index": int}`` where ``index`` is the item's position in this dataset;
    ``uint8=True``: the image stays (1, H, W) uint8 (4x less to copy; the training loop augments it).
    ``verify``: check the cache shards' sha256 on opening: ``"auto"`` (default) those whose size or modification
    time changed since they last matched (:meth:`ImageCache.open`), ``True`` all, ``False`` none.
    """

    def __init__(self, root, split: str = "train", ratio: float = 1.0, seed: int = 0, transform=None,
                 verify: bool | str = "auto", uint8: bool = False):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.root = Path(root)
        self.domain = _read_meta(self.root)
        self.cache = ImageCache.open(self.root / CACHE_DIR, verify=verify)
        all_labels = _labels_from_cache(self.root, self.domain, self.cache)  # (n_items, C)
        self.name: str = self.domain["name"]
        self.task: str = self.domain["task"]
        self.classes: list[str] = list(self.domain["classes"])
        self.split, self.ratio, self.seed, self.transform = split, float(ratio), int(seed), transform
        self.uint8 = uint8  # items keep the cache's uint8 pixels (augmented and scaled later, on the device)
        if uint8 and transform is not None:
            raise ValueError("uint8=True hands out raw pixels: give no transform (augment the batch instead)")

        splits_dir = self.root / SPLITS_DIR
        splits, subsets = read_split_files(splits_dir)
        if split == "train":
            key = next((k for k in subsets if math.isclose(k[0], ratio) and k[1] == seed), None)
            source = splits_dir / ratio_filename(ratio, seed)
            if key is None:
                have = ", ".join(ratio_filename(*k) for k in sorted(subsets)) or "none"
                raise FileNotFoundError(f"{source}: no such split file (ratio {ratio}, seed {seed}); found: {have}")
            ids = subsets[key]
        else:
            source, ids = splits_dir / "split.csv", splits[split]
        item_of = dict(zip(self.cache.index["image_id"].astype(str), self.cache.index["item"].tolist()))
        unknown = [i for i in ids if i not in item_of]
        if unknown:
            raise ValueError(f"{source}: {len(unknown)} image id(s) not in the image cache {self.root / CACHE_DIR}, "
                             f"e.g. {unknown[0]!r}")
        self.image_ids: list[str] = list(ids)
        self._items = np.array([item_of[i] for i in ids], dtype=np.int64)  # (N,) cache items
        self._labels = all_labels[self._items] if len(ids) else np.zeros((0, len(self.classes)), np.float32)  # (N, C)
        self._item_of = item_of
        self._boxes: dict[str, list[dict]] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        part = f"train {self.ratio:g} seed {self.seed}" if self.split == "train" else self.split
        return (f"DomainImages({self.name!r}, {part}: {len(self):,} images, {self.task} over {len(self.classes)} "
                f"classes, root='{self.root}')")

    def __getitem__(self, i) -> dict:
        i = checked_index(i, len(self), "image")
        pixels = self.cache.image(int(self._items[i]))  # (H, W) uint8, read-only view
        if self.uint8:
            return {"image": torch.from_numpy(pixels.copy())[None], "labels": torch.from_numpy(self._labels[i].copy()),
                    "image_id": self.image_ids[i], "index": i}  # (1, H, W) uint8
        image = torch.from_numpy(np.divide(pixels, 255, dtype=np.float32))[None]  # (1, H, W) in [0, 1]
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "labels": torch.from_numpy(self._labels[i].copy()),  # (C,)
                "image_id": self.image_ids[i], "index": i}

    def labels_matrix(self) -> np.ndarray:
        """(N, C) float32 0/1 labels in dataset order."""
        return self._labels.copy()

    def boxes(self, image_id: str) -> list[dict]:
        """The boxes of one image of this domain (any split): ``[{"label", "x0", "y0", "x1", "y1"}, ...]``."""
        if self._boxes is None:
            self._boxes = self._read_boxes()
        if image_id not in self._item_of:
            raise KeyError(f"image {image_id!r} is not in domain {self.name!r} ({self.root})")
        return [dict(b) for b in self._boxes.get(image_id, [])]

    def _read_boxes(self) -> dict[str, list[dict]]:
        path = self.root / BOXES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (a domain without boxes has one with only the header "
                                    f"{','.join(BOX_COLUMNS)})")
        size = self.domain["image_size"]
        out: dict[str, list[dict]] = {}
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh)
                header = next(reader, None)
                if header is None or [h.strip() for h in header] != BOX_COLUMNS:
                    raise ValueError(f"{path}: expected the header '{','.join(BOX_COLUMNS)}', found {header!r}")
                for line, row in enumerate(reader, start=2):
                    if not row or all(not c.strip() for c in row):
                        continue
                    if len(row) != len(BOX_COLUMNS):
                        raise ValueError(f"{path}, line {line}: expected {len(BOX_COLUMNS)} columns, got {row!r}")
                    image_id, label = row[0].strip(), row[1].strip()
                    if image_id not in self._item_of:
                        raise ValueError(f"{path}, line {line}: image {image_id!r} is not in the image cache")
                    if label not in self.classes:
                        raise ValueError(f"{path}, line {line}: label {label!r} is not one of the classes "
                                         f"{self.classes} in {DOMAIN_FILE}")
                    try:
                        x0, y0, x1, y1 = (float(v) for v in row[2:])
                    except ValueError:
                        raise ValueError(f"{path}, line {line}: coordinates must be numbers, got {row[2:]!r}") from None
                    if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
                        raise ValueError(f"{path}, line {line}: box ({x0}, {y0}, {x1}, {y1}) is empty or outside "
                                         f"the {size}x{size} image (need 0 <= x0 < x1 <= {size}, same for y)")
                    out.setdefault(image_id, []).append({"label": label, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a UTF-8 text file ({e})") from e
        return out
