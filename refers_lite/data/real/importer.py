"""``refers-lite data import``: your own radiographs and reports (or MIMIC-CXR) -> the folders training reads.

Three entry points, one engine:

* :func:`import_studies`: a folder of images and a table of studies with their reports -> a **source domain**,
  the layout ``refers-lite data build`` writes and pre-training reads
  (:class:`~refers_lite.data.loading.source_studies.SourceStudies`)::

      <out>/cache/                uint8 S x S images (refers_lite.data.loading.image_cache), one row per image
      <out>/studies.csv           study_id, split, patient, image_ids, views, findings, unrendered, labels, text
      <out>/report_tokenizer.json the report vocabulary, trained on the train split's reports only
      <out>/boxes.csv             header only (imported studies have no boxes)
      <out>/domain.json           name "source", kind, counts, image size, where it came from
      <out>/import_summary.json   counts: studies, images, skipped by reason, splits, input changes
      <out>/skipped.csv           one line per thing left out: reason, study_id, image, detail
      <out>/import_plan.csv       the images to read, in cache order (file, size, modification time)

* :func:`import_mimic`: MIMIC-CXR-JPG images, MIMIC-CXR reports and the official split files -> the same layout
  (reports parsed by :mod:`refers_lite.data.reports.mimic_cxr`: FINDINGS + IMPRESSION, as the paper uses them).
* :func:`import_labelled`: a folder of images and a table of their labels -> a **target domain**, the layout
  fine-tuning reads (:mod:`refers_lite.data.loading.domain_dataset`: ``domain.json``, ``cache/``, ``boxes.csv``,
  ``splits/`` with the 1 / 10 / 100 % label subsets).

The table (CSV, ``.csv.gz``, or JSON Lines ``.jsonl``): one row per study, or one row per image (rows of one
study share its ``study_id``). Column names (case-insensitive; the alias in brackets works too):

==============  =====================================================================================
``study_id``    required for studies: the study's id (any text)
``image``       required (``image_path``, ``images``, ``path``): the image file, relative to the images folder
                (or absolute); several files of one study in one cell are separated by ``;`` (a JSON list
                in JSON Lines)
``report``      required for studies (``text``): the free-text report. When it has FINDINGS / IMPRESSION
                headers only those two sections are kept (as the paper does); otherwise the whole text
``view``        optional: ``frontal`` / ``lateral`` / a DICOM ViewPosition (``PA``, ``AP``, ``LL``, ...); one per
                image, ``;``-separated like ``image``
``patient_id``  optional (``patient``, ``subject_id``): splits are made per patient (else per study)
``split``       optional: ``train`` / ``validation`` (``validate``, ``val``) / ``test``; else a seeded split
``labels``      optional: ``;``-separated class names of the study or image (fine-tuning tables: the classes)
==============  =====================================================================================

Views come from the table, else from the DICOM header (``ViewPosition``, then ``PatientOrientation``: a row
direction of L / R is a frontal film, A / P a lateral one), else ``unknown``.

Images: DICOM (MONOCHROME1 / MONOCHROME2, modality and VOI LUT; found by suffix ``.dcm`` / ``.dicom`` or by the
``DICM`` magic of files without a suffix), PNG (8- and 16-bit), JPEG and anything else PIL reads
(:mod:`refers_lite.data.real.real_radiograph`), letterboxed to ``image_size`` (aspect kept, zero padding).

Skipped, counted by reason and listed in ``skipped.csv`` (nothing stops the import, nothing in the input folder is
written): ``missing_file``, ``unreadable_image`` (the reader's message is the detail), ``duplicate_image`` (a
file listed twice), ``bad_image_path`` (a ``;`` inside a JSON list entry), ``no_study_id``, ``report_empty``,
``report_too_short`` (fewer than :data:`~refers_lite.data.reports.cleaning.MIN_TOKENS` tokens, the paper's
rule), ``no_image`` (a study none of whose images is usable), ``bad_label`` (a label cell that is not 0/1); for
MIMIC also the report parser's reasons (``no_report_file``, ``no_findings_or_impression``, ...).

Scale: images are read in ``workers`` processes, a shard of ``shard_size`` images at a time, with a progress bar
(:func:`~refers_lite.data.loading.image_cache.build_cache`). A worker is handed the shards' byte offsets in
``import_plan.csv`` (one number per shard) and reads only its shard's lines, so its memory does not grow with the
input; the importing process holds the per-image tables in compact columns and writes the plan, skip list and ``studies.csv`` in chunks: it grows by about 0.7 KiB per image (peak of its Python allocations between 1,500 and 6,000 images, ``benchmarks/import_rate.py``; about 290 MiB projected for MIMIC-CXR's 377,110), mostly the cache's index, the report texts and a dict per study. A killed import resumes with the same command
(finished shards are kept, checked by sha256). The cache's fingerprint covers every image file's path, size and
modification time: a changed, added or removed file is detected (``import_summary.json``'s ``input_changes``)
and the cache is rendered again.
"""
from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import os
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...files import atomic_save, atomic_write, sha256_file, write_if_changed
from .real_radiograph import (DICOM_SUFFIXES, ImageReadError, dicom_to_unit, letterbox, read_dicom_dataset,
                              read_image, unit_to_uint8)

__all__ = ["DataImportError", "SKIP_REASONS", "import_labelled", "import_mimic", "import_studies", "read_table",
           "render_plan_shard", "view_from_dicom", "view_from_text"]

IMAGE_SIZE = 256  # the size `refers-lite data build` caches at, for every profile (the models crop / resize it)
SHARD_SIZE = 256  # images per cache shard: the unit of parallel work and of resuming
PLAN_FILE, SKIPPED_FILE, SUMMARY_FILE = "import_plan.csv", "skipped.csv", "import_summary.json"
PLAN_COLUMNS = ("image_id", "study_id", "patient", "view", "file", "path", "size", "mtime_ns")
SKIP_REASONS = ("missing_file", "unreadable_image", "duplicate_image", "bad_image_path", "no_study_id",
                "report_empty", "report_too_short", "no_image", "bad_label")
FORMAT_VERSION = 1

_ALIASES = {"study_id": ("study_id", "study"), "image": ("image", "image_path", "images", "path"),
            "report": ("report", "text"), "view": ("view", "views"),
            "patient_id": ("patient_id", "patient", "subject_id"), "split": ("split",), "labels": ("labels",)}
_SPLIT_NAMES = {"train": "train", "training": "train", "validation": "validation", "validate": "validation",
                "val": "validation", "valid": "validation", "test": "test"}


class DataImportError(ValueError):
    """The input cannot be imported at all (no table, a missing column, nothing usable); names the file."""


# ----------------------------------------------------------------------------- the table


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_table(path: str | Path, required: Sequence[str] = ("study_id", "image", "report")) -> pd.DataFrame:
    """The table as strings (JSON lists of images joined by ``;``), columns renamed to their canonical names
    (module doc); :class:`DataImportError` naming the file for a missing file or column, or a bad JSON line."""
    path = Path(path)
    if not path.is_file():
        raise DataImportError(f"table not found: {path}")
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    try:
        if stem.endswith((".jsonl", ".ndjson", ".json")):
            rows = []
            with _open_text(path) as fh:
                for line_no, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as e:
                        raise DataImportError(f"{path}, line {line_no}: not a JSON object ({e})") from None
                    if not isinstance(obj, dict):
                        raise DataImportError(f"{path}, line {line_no}: expected a JSON object, got "
                                           f"{type(obj).__name__}")
                    rows.append({k: (";".join(map(str, v)) if isinstance(v, list) else "" if v is None else str(v))
                                 for k, v in obj.items()})
            df = pd.DataFrame(rows, dtype=str).fillna("")
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, EOFError) as e:
        raise DataImportError(f"{path}: not a readable CSV / JSON Lines table ({e})") from e
    lower = {c.strip().lower(): c for c in df.columns}
    rename = {}
    for name, aliases in _ALIASES.items():
        found = [lower[a] for a in aliases if a in lower]
        if len(found) > 1:
            raise DataImportError(f"{path}: columns {found} all mean {name!r}; keep one")
        if found:
            rename[found[0]] = name
    df = df.rename(columns=rename)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataImportError(f"{path}: missing column(s) {missing}; found {list(df.columns)}. A table needs "
                           f"{list(required)} (aliases: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in _ALIASES.items()
                                                                       if k in required) + ")")
    return df


def _cells(value: str) -> list[str]:
    return [s.strip() for s in str(value).split(";")]


# ----------------------------------------------------------------------------- views


def view_from_text(value: str) -> str:
    """``frontal`` / ``lateral`` / ``unknown`` / ``""`` (empty: not given) from a table's view cell."""
    from ..reports.mimic_cxr import view_of
    v = " ".join(str(value).split()).strip()
    if not v:
        return ""
    low = v.lower()
    if low in ("frontal", "front", "f"):
        return "frontal"
    if low in ("lateral", "lat", "side", "l"):
        return "lateral"
    return view_of(v)


def view_from_dicom(ds) -> str:
    """``frontal`` / ``lateral`` from a DICOM header's ViewPosition, else its PatientOrientation (the direction of
    the rows: L / R on a frontal film, A / P on a lateral one); ``""`` when neither says."""
    from ..reports.mimic_cxr import view_of
    vp = str(getattr(ds, "ViewPosition", "") or "").strip()
    if vp and view_of(vp) != "unknown":
        return view_of(vp)
    po = getattr(ds, "PatientOrientation", None)
    if po:
        parts = list(po) if not isinstance(po, str) else po.replace("\\", " ").split()
        first = str(parts[0]).strip().upper()[:1] if parts else ""
        if first in ("L", "R"):
            return "frontal"
        if first in ("A", "P"):
            return "lateral"
    return ""


# ----------------------------------------------------------------------------- reading one image


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:  # .png, .jpg, ...: PIL's
        return False
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_one(path: Path, size: int) -> tuple[np.ndarray, str]:
    """(uint8 (H, W) dense = bright, the DICOM header's view or "")."""
    if _is_dicom(path):
        ds = read_dicom_dataset(path)
        return unit_to_uint8(dicom_to_unit(ds, name=str(path))), view_from_dicom(ds)
    return read_image(path, draft_size=size), ""


def render_plan_shard(plan_csv: str, offsets: tuple[int, ...], shard_size: int, image_size: int,
                      label_columns: tuple[str, ...], indices: list[int]) -> list[tuple[np.ndarray, dict]]:
    """The cache's ``render_shard``: read rows ``indices`` (one shard) of ``plan_csv``, starting at the shard's
    byte offset, and letterbox their images. An unreadable image gives a black square and ``ok=0`` with the
    reader's message in ``error`` (it is left out of the studies, not fatal). Used as a ``functools.partial`` of
    everything but ``indices``: small to pickle, and a worker reads only its shard's lines."""
    s = indices[0] // shard_size
    with open(plan_csv, "rb") as raw:
        header = next(csv.reader(io.TextIOWrapper(io.BytesIO(raw.readline()), encoding="utf-8", newline="")))
        raw.seek(offsets[s])
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = csv.reader(text)
        rows = [dict(zip(header, next(reader))) for _ in indices]
    out = []
    for r in rows:
        meta = {"image_id": r["image_id"], "study_id": r["study_id"], "view": r["view"], "file": r["file"]}
        meta.update({c: int(r[c]) for c in label_columns})
        try:
            img, dicom_view = _read_one(Path(r["path"]), image_size)  # (H, W) uint8
            square, _ = letterbox(img, image_size)  # (S, S)
            meta.update(dicom_view=dicom_view, ok=1, error="", orig_h=int(img.shape[0]), orig_w=int(img.shape[1]))
        except ImageReadError as e:
            square = np.zeros((image_size, image_size), np.uint8)
            meta.update(dicom_view="", ok=0, error=e.reason, orig_h=0, orig_w=0)
        out.append((square, meta))
    return out


# ----------------------------------------------------------------------------- plan -> cache


class _Texts:
    """A column of strings kept as one UTF-8 buffer and an offset per string: about ``len + 8`` bytes each where a
    list of Python ``str`` costs ``len + 57`` (and a dict per row several hundred more)."""

    def __init__(self):
        self._buf, self._end = bytearray(), array("q")

    def append(self, value: str) -> None:
        self._buf += value.encode("utf-8", "surrogatepass")
        self._end.append(len(self._buf))

    def __len__(self) -> int:
        return len(self._end)

    def __getitem__(self, i: int) -> str:
        start = self._end[i - 1] if i > 0 else 0
        return self._buf[start:self._end[i]].decode("utf-8", "surrogatepass")

    def __iter__(self):
        start, buf = 0, self._buf
        for end in self._end:
            yield buf[start:end].decode("utf-8", "surrogatepass")
            start = end

    def nbytes(self) -> int:
        return len(self._buf) + 8 * len(self._end)


class _Codes:
    """A column of repeated strings (study, patient, view): a code per row and each distinct value once."""

    def __init__(self):
        self.values: list[str] = []
        self._code: dict[str, int] = {}
        self.codes = array("i")

    def append(self, value: str) -> None:
        code = self._code.get(value)
        if code is None:
            code = self._code[value] = len(self.values)
            self.values.append(value)
        self.codes.append(code)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> str:
        return self.values[self.codes[i]]

    def __iter__(self):
        values = self.values
        return (values[k] for k in self.codes)


class _Plan:
    """The images to read, one row each, in compact columns (the plan CSV's columns, module doc): strings in
    :class:`_Texts` / :class:`_Codes`, sizes and times in int64 arrays, labels in int8 arrays."""

    def __init__(self, label_columns: Sequence[str] = ()):
        self.image_id, self.file, self.path = _Texts(), _Texts(), _Texts()
        self.study_id, self.patient, self.view = _Codes(), _Codes(), _Codes()
        self.size, self.mtime_ns = array("q"), array("q")
        self.labels = {c: array("b") for c in label_columns}

    def __len__(self) -> int:
        return len(self.image_id)

    def add(self, image_id: str, study_id: str, patient: str, view: str, file: str, labels: dict | None = None,
            path: str = "", size: int = 0, mtime_ns: int = 0) -> None:
        self.image_id.append(image_id)
        self.study_id.append(study_id)
        self.patient.append(patient)
        self.view.append(view)
        self.file.append(file)
        self.path.append(path)
        self.size.append(size)
        self.mtime_ns.append(mtime_ns)
        for c, col in self.labels.items():
            col.append(labels[c])

    def row(self, i: int) -> dict:
        return {"image_id": self.image_id[i], "study_id": self.study_id[i], "patient": self.patient[i],
                "view": self.view[i], "file": self.file[i], "path": self.path[i], "size": self.size[i],
                "mtime_ns": self.mtime_ns[i]} | {c: col[i] for c, col in self.labels.items()}

    def rows(self, columns: Sequence[str]):
        """The rows as lists of the ``columns``' values, one at a time."""
        cols = [self.labels[c] if c in self.labels else getattr(self, c) for c in columns]
        return zip(*(iter(c) for c in cols))


class _Skips:
    def __init__(self):
        self.counts: Counter = Counter()
        self._reason, self._study, self._image, self._detail = _Codes(), _Codes(), _Texts(), _Texts()

    @property
    def rows(self):
        """(reason, study_id, image, detail) of each skip, in the order they were added."""
        return zip(self._reason, self._study, self._image, self._detail)

    def add(self, reason: str, study_id: str = "", image: str = "", detail: str = "") -> None:
        self.counts[reason] += 1
        self._reason.append(reason)
        self._study.append(study_id)
        self._image.append(image)
        self._detail.append(detail)

    def write(self, path: Path) -> None:
        atomic_save(path, lambda f: _write_csv_rows(f, ["reason", "study_id", "image", "detail"], self.rows))


def _write_csv_rows(f, header: Sequence[str], rows, offsets_every: int = 0, chunk: int = 4096) -> list[int]:
    """Write a CSV (``csv.writer``, ``\\n`` line ends) to the binary file ``f``, ``chunk`` rows at a time (memory
    does not grow with the rows); with ``offsets_every`` = n, return the byte offsets of rows 0, n, 2n, ..."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")

    def flush() -> int:
        data = buf.getvalue().encode("utf-8")
        f.write(data)
        buf.seek(0)
        buf.truncate()
        return len(data)

    w.writerow(header)
    pos, offsets = flush(), []
    for i, r in enumerate(rows):
        if offsets_every and i % offsets_every == 0:
            pos += flush()
            offsets.append(pos)
        elif i % chunk == 0:
            pos += flush()
        w.writerow(r)
    flush()
    return offsets


def _resolve(images_dir: Path, file: str) -> Path:
    p = Path(file)
    return p if p.is_absolute() else images_dir / p


def _stat_rows(pending: _Plan, images_dir: Path, skips: _Skips, keep=None) -> _Plan:
    """The rows of ``pending`` (those whose study is in ``keep``, if given) whose file exists (others skipped as
    missing_file; a file listed again as duplicate_image), with path, size and modification time filled in."""
    sel = np.arange(len(pending)) if keep is None else \
        np.flatnonzero(np.isin(np.frombuffer(pending.study_id.codes, np.int32),
                               [k for k, v in enumerate(pending.study_id.values) if v in keep]))
    keys = np.fromiter((hash(os.path.normpath(str(_resolve(images_dir, pending.file[i])))) for i in sel), np.int64,
                       len(sel))
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    first = first[inverse]  # where each row's file (its normalised path) is first listed
    del keys, inverse
    ok = np.zeros(len(sel), bool)
    kept = _Plan(pending.labels)
    for j, i in enumerate(sel):
        file, sid = pending.file[i], pending.study_id[i]
        if first[j] != j and ok[first[j]]:
            skips.add("duplicate_image", sid, file, "listed earlier in the table")
            continue
        path = _resolve(images_dir, file)
        try:
            st = path.stat()
        except OSError:
            skips.add("missing_file", sid, file, f"no such file: {path}")
            continue
        if not path.is_file():
            skips.add("missing_file", sid, file, f"not a file: {path}")
            continue
        ok[j] = True
        kept.add(pending.image_id[i], sid, pending.patient[i], pending.view[i], file,
                 {c: col[i] for c, col in pending.labels.items()}, str(path.resolve()), st.st_size, st.st_mtime_ns)
    return kept


def _need_some(rows: _Plan, skips: _Skips, images_dir: Path, out: Path) -> None:
    """Stop with a clear message (and the skip list written) when no listed image can be read at all."""
    if len(rows):
        return
    out.mkdir(parents=True, exist_ok=True)
    skips.write(out / SKIPPED_FILE)
    example = next((r[2] for r in skips.rows if r[0] == "missing_file"), None)
    raise DataImportError(f"no image to read under {images_dir}: " + ", ".join(f"{k} {v}" for k, v in
                          sorted(skips.counts.items())) + (f" (e.g. {example!r}; image paths are taken relative to "
                          f"the images folder)" if example else "") + f"; see {out / SKIPPED_FILE}")


def _write_plan(plan: _Plan, columns: list[str], path: Path, shard_size: int) -> tuple[int, ...]:
    """Write the plan CSV a chunk at a time; return the byte offset of the first row of every shard."""
    offsets: list[int] = []
    atomic_save(path, lambda f: offsets.extend(_write_csv_rows(f, columns, plan.rows(columns),
                                                               offsets_every=shard_size)))
    return tuple(offsets)


def _stamps(paths, sizes, mtimes) -> pd.DataFrame:
    """(hash of the path, hash of its size and time) per file, one row per path (the last one listed wins)."""
    n = len(paths) if hasattr(paths, "__len__") else -1
    key = np.fromiter((hash(p) for p in paths), np.int64, n)
    stamp = np.fromiter((hash((str(a), str(b))) for a, b in zip(sizes, mtimes)), np.int64, n)
    return pd.DataFrame({"key": key, "stamp": stamp}).drop_duplicates("key", keep="last")


def _input_changes(old_plan: Path, plan: _Plan) -> dict | None:
    """Compare the previous import's plan (if any) with this one: files added, removed, changed (size or time).
    Both are compared as 64-bit hashes of path and of (size, time), read in chunks: memory stays small."""
    if not old_plan.is_file():
        return None
    try:
        parts = [_stamps(c["path"].tolist(), c["size"].tolist(), c["mtime_ns"].tolist())
                 for c in pd.read_csv(old_plan, dtype=str, keep_default_na=False, usecols=["path", "size", "mtime_ns"],
                                      chunksize=65536)]
    except (ValueError, pd.errors.ParserError, OSError):
        return {"previous_plan": "unreadable"}
    before = pd.concat(parts).drop_duplicates("key", keep="last") if parts else _stamps([], [], [])
    now = _stamps(plan.path, plan.size, plan.mtime_ns)
    both = now.merge(before, on="key", suffixes=("", "_old"))
    return {"added": int((~now["key"].isin(before["key"])).sum()),
            "removed": int((~before["key"].isin(now["key"])).sum()),
            "changed": int((both["stamp"] != both["stamp_old"]).sum())}


def _render(rows: _Plan, out: Path, kind: str, label_columns: tuple[str, ...], *, image_size: int,
            workers: int, shard_size: int, progress: bool, desc: str):
    """Write the plan and build (or resume, or reuse) the cache of its images; return (cache, input changes)."""
    from ..loading.image_cache import build_cache

    if not len(rows):
        raise DataImportError(f"no image file to read: every image listed is missing or was skipped (paths are taken "
                              f"relative to the images folder; is it the folder the table's paths start from?)")
    out.mkdir(parents=True, exist_ok=True)
    plan = out / PLAN_FILE
    changes = _input_changes(plan, rows)
    columns = list(PLAN_COLUMNS) + list(label_columns)
    offsets = _write_plan(rows, columns, plan, shard_size)
    fingerprint = {"kind": kind, "plan_sha256": sha256_file(plan), "image_size": image_size, "version": FORMAT_VERSION,
                   "resize": "letterbox: aspect-preserving, bilinear, zero padding; JPEG draft decoding"}
    render = functools.partial(render_plan_shard, str(plan.resolve()), offsets, shard_size, image_size,
                               tuple(label_columns))
    cache = build_cache(out / "cache", len(rows), render, fingerprint=fingerprint, image_size=image_size,
                        shard_size=shard_size, workers=workers, desc=desc, progress=progress)
    return cache, changes


def _usable_images(cache, skips: _Skips) -> tuple[np.ndarray, pd.Categorical]:
    """(whether each cached image was read, its view): one entry per cache item, i.e. per plan row; unreadable ones
    are skipped (reason and message). The view: the table's, else the DICOM header's, else ``unknown``."""
    idx = cache.index
    ok = idx["ok"].to_numpy().astype(np.int64) == 1
    for k in np.flatnonzero(~ok):
        skips.add("unreadable_image", str(idx["study_id"].iat[k]), str(idx["file"].iat[k]),
                  str("" if pd.isna(idx["error"].iat[k]) else idx["error"].iat[k]))
    given = idx["view"].fillna("").astype(str)
    given = given.where(given != "unknown", "")  # a table's unrecognised view: the header may know
    view = given.where(given != "", idx["dicom_view"].fillna("").astype(str))
    return ok, pd.Categorical(view.where(view != "", "unknown"))


# ----------------------------------------------------------------------------- studies -> source domain


def _report_text(raw: str) -> str:
    """FINDINGS + IMPRESSION when the report has those headers, else the whole text; cleaned."""
    from ..reports.cleaning import clean_report
    from ..reports.mimic_cxr import extract_sections
    findings, impression = extract_sections(raw)
    kept = " ".join(s for s in (findings, impression) if s) or raw
    return clean_report(kept)


def _split_fractions(n_groups: int) -> tuple[float, float, float]:
    """80 / 10 / 10, but at least one validation and one test group from 3 groups on (pre-training validates)."""
    if n_groups >= 3:
        f = max(0.1, 1.0 / n_groups)
        return 1 - 2 * f, f, f
    if n_groups == 2:
        return 0.5, 0.5, 0.0
    return 1.0, 0.0, 0.0


def _finish_source(out: Path, studies: list[dict], plan: _Plan, cache, skips: _Skips, changes, *, seed: int, vocab_size: int,
                   image_size: int, t0: float, origin: str, attribution: str, log) -> dict:
    """Drop unusable images and imageless studies, split, train the tokenizer, write studies.csv and the rest."""
    from ..loading.source_studies import ALL_COLUMNS, STUDIES_FILE, TOKENIZER_FILE
    from ..reports.records import StudyRecord
    from ..reports.report_tokenizer import ReportTokenizer
    from ..reports.splits import SPLITS, make_splits
    from ..reports.structured_labels import LABELS

    usable, views = _usable_images(cache, skips)
    # each study's usable images, in plan (= cache) order, as item numbers grouped by study
    row_of = {s["study_id"]: k for k, s in enumerate(studies)}
    study_of_code = np.array([row_of.get(v, -1) for v in plan.study_id.values], np.int64)
    del row_of
    items = np.flatnonzero(usable)
    study_of_item = study_of_code[np.frombuffer(plan.study_id.codes, np.int32)[items]]
    order = np.argsort(study_of_item, kind="stable")
    items, counts = items[order], np.bincount(study_of_item, minlength=len(studies))
    starts = np.concatenate([[0], np.cumsum(counts)])
    del order, study_of_item
    kept = []
    for k, s in enumerate(studies):
        if not counts[k]:
            skips.add("no_image", s["study_id"], "", "none of its images is usable")
            continue
        s["items"] = items[starts[k]:starts[k + 1]]
        kept.append(s)
    if not kept:
        skips.write(out / SKIPPED_FILE)
        raise DataImportError(f"nothing to import: no study has a usable image and report (see {out / SKIPPED_FILE}: "
                           + ", ".join(f"{k} {v}" for k, v in sorted(skips.counts.items())) + ")")
    given = [s for s in kept if s["split"]]
    if given and len(given) != len(kept):
        raise DataImportError(f"the table gives a split for {len(given)} of {len(kept)} usable studies; give it for "
                           f"all or none (missing e.g. for study {next(s['study_id'] for s in kept if not s['split'])!r})")
    if not given:
        groups = {s["patient"] or f"study:{s['study_id']}" for s in kept}
        records = [StudyRecord(s["study_id"], "", "", subject_id=s["patient"] or None) for s in kept]
        split_of = {sid: name for name, ids in make_splits(records, _split_fractions(len(groups)), seed=seed).items()
                    for sid in ids}
        for s in kept:
            s["split"] = split_of[s["study_id"]]
    label_names = set(LABELS)
    all_labels = {n for s in kept for n in s["labels"]}
    unknown_labels = sorted(all_labels - label_names)
    write_labels = bool(all_labels) and not unknown_labels
    columns = [c for c in ALL_COLUMNS if write_labels or c != "labels"]
    view_names, view_codes = list(views.categories), views.codes
    view_counts: dict[str, int] = {}  # in the order the views first appear

    def study_rows():
        for s in kept:
            its = s["items"]
            for c in view_codes[its]:
                view_counts[view_names[c]] = view_counts.get(view_names[c], 0) + 1
            yield {"study_id": s["study_id"], "split": s["split"], "patient": s["patient"],
                   "image_ids": ";".join(plan.image_id[i] for i in its),
                   "views": ";".join(view_names[c] for c in view_codes[its]), "findings": "", "unrendered": "",
                   "labels": ";".join(sorted(s["labels"])), "text": s["text"]}

    # an identical studies.csv is left alone (its modification time too), as write_if_changed does
    atomic_save(out / STUDIES_FILE, lambda f: _write_csv_rows(f, columns, ([r[c] for c in columns] for r in study_rows())),
                keep_identical=True)
    train_texts = [s["text"] for s in kept if s["split"] == "train"]
    if not train_texts:
        raise DataImportError(f"{out}: no study in the train split; the report tokenizer is trained on it")
    tok = ReportTokenizer.train(train_texts, vocab_size=vocab_size)
    tok_json = tok.tok.to_str(pretty=True)
    write_if_changed(out / TOKENIZER_FILE, tok_json)
    write_if_changed(out / "boxes.csv", "image_id,label,x0,y0,x1,y1,side\n")
    skips.write(out / SKIPPED_FILE)
    splits = {name: sum(s["split"] == name for s in kept) for name in SPLITS}
    n_images = int(sum(len(s["items"]) for s in kept))
    summary = {"name": "source", "kind": "source", "imported": True, "studies": len(kept), "images": n_images,
               "views": view_counts,
               "splits": splits, "split_by": "table" if given else "patient" if any(s["patient"] for s in kept)
               else "study", "skipped": dict(sorted(skips.counts.items())),
               "report_vocabulary": tok.vocab_size, "image_size": image_size, "rendered_images": cache.rendered,
               "input_changes": changes, "labels_column": write_labels, "unknown_labels": unknown_labels[:20],
               "seconds": round(time.perf_counter() - t0, 1), "source": origin, "attribution": attribution}
    domain = {k: summary[k] for k in ("name", "kind", "imported", "studies", "images", "image_size", "source",
                                      "attribution")}
    write_if_changed(out / "domain.json", json.dumps(domain, indent=2) + "\n")
    write_if_changed(out / SUMMARY_FILE, json.dumps({k: v for k, v in summary.items() if k != "seconds"},
                                                    indent=2) + "\n")
    if log:
        log(format_summary(summary, out))
    return summary


def format_summary(summary: dict, out: Path) -> str:
    """The lines ``refers-lite data import`` prints."""
    lines = [f"imported into {out}: {summary['studies']:,} studies, {summary['images']:,} images "
             f"({summary['image_size']}x{summary['image_size']} uint8)"]
    if "splits" in summary:
        lines.append("splits            " + ", ".join(f"{k} {v:,}" for k, v in summary["splits"].items())
                     + f" (by {summary['split_by']})")
    if "views" in summary:
        lines.append("views             " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["views"].items())))
    if "report_vocabulary" in summary:
        lines.append(f"report vocabulary {summary['report_vocabulary']:,} tokens (train split only)")
    if "classes" in summary:
        lines.append("classes           " + ", ".join(f"{c} {n:,}" for c, n in summary["positives"].items())
                     + f" ({summary['task']})")
    skipped = summary["skipped"]
    lines.append("skipped           " + (", ".join(f"{k} {v:,}" for k, v in skipped.items()) if skipped else "nothing")
                 + (f" (listed in {out / SKIPPED_FILE})" if skipped else ""))
    ch = summary.get("input_changes")
    if ch:
        lines.append("since last import " + (", ".join(f"{k} {v}" for k, v in ch.items() if v) or "no file changed"))
    n = summary["rendered_images"]
    lines.append("image cache       " + ("reused (every shard verified)" if n == 0 else f"{n:,} image(s) read"))
    return "\n".join(lines)


def _check_sizes(image_size: int, workers: int, shard_size: int) -> None:
    for name, v in (("image_size", image_size), ("workers", workers), ("shard_size", shard_size)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")


def _images_dir(images_dir) -> Path:
    d = Path(images_dir)
    if not d.is_dir():
        raise DataImportError(f"images folder not found (or not a folder): {d}")
    return d


def import_studies(images_dir, table, out, *, image_size: int = IMAGE_SIZE, workers: int = 1, seed: int = 0,
                   vocab_size: int = 3000, min_tokens: int | None = None, shard_size: int = SHARD_SIZE,
                   progress: bool = True, log=print) -> dict:
    """A folder of radiographs + a table of studies and reports -> a source domain in ``out`` (module doc).
    Returns the summary (also in ``import_summary.json``); ``log`` gets the printed summary (None: silent)."""
    from ..reports.cleaning import MIN_TOKENS, count_tokens

    t0 = time.perf_counter()
    _check_sizes(image_size, workers, shard_size)
    images_dir, out = _images_dir(images_dir), Path(out)
    min_tokens = MIN_TOKENS if min_tokens is None else int(min_tokens)
    df = read_table(table)
    skips = _Skips()
    studies: dict[str, dict] = {}
    pending = _Plan()  # the images, before their files are looked at
    for line, r in enumerate(df.to_dict("records"), start=2):
        sid = str(r["study_id"]).strip()
        files = [f for f in _cells(r["image"]) if f]
        if not sid:
            skips.add("no_study_id", "", ";".join(files), f"table row {line}")
            continue
        st = studies.get(sid)
        if st is None:
            st = studies[sid] = {"study_id": sid, "raw": "", "patient": str(r.get("patient_id", "")).strip(),
                                 "split": str(r.get("split", "")).strip(), "labels": set(), "line": line}
        if not st["raw"].strip():
            st["raw"] = str(r["report"])
        st["labels"] |= {n for n in _cells(r.get("labels", "")) if n}
        views = _cells(r.get("view", "")) if str(r.get("view", "")).strip() else []
        for k, f in enumerate(files):
            view = view_from_text(views[k] if k < len(views) else (views[0] if len(views) == 1 else ""))
            pending.add(Path(f).as_posix(), sid, st["patient"], view, f)
    # study-level checks before any image is read: their images are not worth reading
    usable: list[dict] = []
    for st in studies.values():
        split = st["split"]
        if split and split.lower() not in _SPLIT_NAMES:
            raise DataImportError(f"{table}, line {st['line']}: study {st['study_id']!r} has unknown split {split!r}; "
                               f"expected train, validation or test")
        st["split"] = _SPLIT_NAMES.get(split.lower(), "") if split else ""
        st["text"] = _report_text(st["raw"])
        if not st["text"].strip():
            skips.add("report_empty", st["study_id"], "", "no report text (after keeping FINDINGS + IMPRESSION)")
        elif count_tokens(st["text"]) < min_tokens:
            skips.add("report_too_short", st["study_id"], "", f"{count_tokens(st['text'])} token(s) < {min_tokens}: "
                                                               f"{st['text'][:60]!r}")
        else:
            usable.append(st)
    ok_ids = {st["study_id"] for st in usable}
    rows = _stat_rows(pending, images_dir, skips, keep=ok_ids)
    del pending, df, ok_ids
    _need_some(rows, skips, images_dir, out)
    cache, changes = _render(rows, out, "import_studies", (), image_size=image_size, workers=workers,
                             shard_size=shard_size, progress=progress, desc="imported radiographs")
    return _finish_source(out, usable, rows, cache, skips, changes, seed=seed, vocab_size=vocab_size,
                          image_size=image_size, t0=t0, origin=f"imported from {Path(table).name} and {images_dir}",
                          attribution="the user's own studies (their licence; nothing was uploaded)", log=log)


def import_mimic(mimic_root, out, *, reports_root=None, image_size: int = IMAGE_SIZE, workers: int = 1,
                 seed: int = 0, vocab_size: int = 3000, min_tokens: int | None = None, shard_size: int = SHARD_SIZE,
                 progress: bool = True, log=print) -> dict:
    """MIMIC-CXR-JPG (``mimic_root``: ``files/``, ``mimic-cxr-2.0.0-metadata.csv.gz``, optional
    ``mimic-cxr-2.0.0-split.csv.gz``) + the MIMIC-CXR reports (``reports_root``, default ``mimic_root``) -> a
    source domain in ``out``. FINDINGS + IMPRESSION (:mod:`refers_lite.data.reports.mimic_cxr`); the official split
    (``validate`` -> ``validation``) when its file is there, else a seeded split by patient."""
    from ..reports.cleaning import MIN_TOKENS, clean_report, count_tokens
    from ..reports.mimic_cxr import load_mimic_reports, mimic_official_splits
    from .real_datasets import _MIMIC, _find, _need_dir

    t0 = time.perf_counter()
    _check_sizes(image_size, workers, shard_size)
    min_tokens = MIN_TOKENS if min_tokens is None else int(min_tokens)
    root = _need_dir(Path(mimic_root), "MIMIC-CXR-JPG root", _MIMIC)
    metadata = _find(root, ["mimic-cxr-2.0.0-metadata.csv"], "metadata table mimic-cxr-2.0.0-metadata.csv.gz", _MIMIC)
    split_csv = next((root / n for n in ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")
                      if (root / n).is_file()), None)
    listed: list[tuple[str, str]] = []
    records, _ = load_mimic_reports(Path(reports_root) if reports_root else root, metadata, split_csv,
                                    skipped_studies=listed)
    skips = _Skips()
    for sid, reason in listed:
        skips.add(reason, sid, "", "report (load_mimic_reports)")
    official = mimic_official_splits(split_csv) if split_csv is not None else {}
    studies, pending = [], _Plan()
    for rec in records:
        text = clean_report(rec.raw_text)
        if count_tokens(text) < min_tokens:
            skips.add("report_too_short", rec.study_id, "", f"{count_tokens(text)} token(s) < {min_tokens}")
            continue
        st = {"study_id": rec.study_id, "patient": rec.subject_id or "", "text": text, "labels": set(),
              "split": _SPLIT_NAMES.get(official.get(rec.study_id, ""), "")}
        studies.append(st)
        for ref in rec.images:
            pending.add(ref.image_id, rec.study_id, st["patient"], "" if ref.view == "unknown" else ref.view, ref.path)
    del records, official, listed
    rows = _stat_rows(pending, root, skips)
    del pending
    _need_some(rows, skips, root, Path(out))
    cache, changes = _render(rows, Path(out), "import_mimic", (), image_size=image_size, workers=workers,
                             shard_size=shard_size, progress=progress, desc="MIMIC-CXR-JPG radiographs")
    return _finish_source(Path(out), studies, rows, cache, skips, changes, seed=seed, vocab_size=vocab_size,
                          image_size=image_size, t0=t0, origin=f"MIMIC-CXR-JPG under {root}; reports "
                          f"{Path(reports_root) if reports_root else root}", attribution=_MIMIC.attribution, log=log)


# ----------------------------------------------------------------------------- labelled images -> target domain


def import_labelled(images_dir, table, out, *, name: str | None = None, classes: Sequence[str] | None = None,
                    image_size: int = IMAGE_SIZE, workers: int = 1, seed: int = 0, shard_size: int = SHARD_SIZE,
                    progress: bool = True, log=print) -> dict:
    """A folder of images + a table of their labels -> a target domain in ``out`` that ``refers-lite finetune
    --dataset OUT`` reads. Labels: a ``labels`` column of ``;``-separated class names (empty: none of them), or
    one 0/1 column per class (every column but image / patient_id / split / study_id / view / report). One class:
    a binary task; more: multilabel. Splits 70 / 10 / 20 by patient where ``patient_id`` is given, with the 1 / 10 /
    100 % label subsets of seeds 0, 1, 2 (:mod:`refers_lite.data.loading.label_ratios`)."""
    from ..loading.label_ratios import ratio_subsets, split_items, write_split_files

    t0 = time.perf_counter()
    _check_sizes(image_size, workers, shard_size)
    images_dir, out = _images_dir(images_dir), Path(out)
    df = read_table(table, required=("image",))
    if "labels" in df.columns:
        names = sorted({n for cell in df["labels"] for n in _cells(cell) if n})
        cls = list(classes) if classes else names
        unknown = sorted(set(names) - set(cls))
        if unknown:
            raise DataImportError(f"{table}: label(s) {unknown} are not among the classes {cls}")
        y_of = [{c: int(c in set(_cells(cell))) for c in cls} for cell in df["labels"]]
    else:
        reserved = {"image", "patient_id", "split", "study_id", "view", "report"}
        cls = list(classes) if classes else [c for c in df.columns if c not in reserved]
        missing = [c for c in cls if c not in df.columns]
        if missing:
            raise DataImportError(f"{table}: class column(s) {missing} not found; columns: {list(df.columns)}")
        y_of = [{c: str(r[c]).strip() for c in cls} for r in df.to_dict("records")]
    if not cls:
        raise DataImportError(f"{table}: no classes: give a 'labels' column (class names separated by ';') or one 0/1 "
                           f"column per class")
    skips = _Skips()
    pending = _Plan(cls)
    for line, (r, y) in enumerate(zip(df.to_dict("records"), y_of), start=2):
        f = str(r["image"]).strip()
        bad = [c for c, v in y.items() if str(v) not in ("0", "1")]
        if bad:
            skips.add("bad_label", "", f, f"table row {line}: {bad[0]}={y[bad[0]]!r} (expected 0 or 1)")
            continue
        if not f or ";" in f:
            skips.add("bad_image_path", "", f, f"table row {line}: one image per row")
            continue
        pending.add(Path(f).as_posix(), str(r.get("study_id", "")).strip(), str(r.get("patient_id", "")).strip(),
                    view_from_text(r.get("view", "")), f, {c: int(v) for c, v in y.items()})
    del y_of
    rows = _stat_rows(pending, images_dir, skips)
    del pending
    _need_some(rows, skips, images_dir, out)
    cache, changes = _render(rows, out, "import_labelled", tuple(cls), image_size=image_size, workers=workers,
                             shard_size=shard_size, progress=progress, desc="labelled radiographs")
    good, _ = _usable_images(cache, skips)
    idx = cache.index
    if good.sum() < 3:
        skips.write(out / SKIPPED_FILE)
        raise DataImportError(f"{table}: {int(good.sum())} usable image(s); fine-tuning needs at least 3 "
                           f"(see {out / SKIPPED_FILE})")
    ids = idx.loc[good, "image_id"].astype(str).tolist()
    y = idx.loc[good, cls].to_numpy(dtype=np.int64)  # (N, C)
    patients = [rows.patient[i] for i in np.flatnonzero(good)]  # plan rows are the cache's items, in order
    groups = [p or f"image:{i}" for p, i in zip(patients, ids)] if any(patients) else None
    splits = split_items(ids, y, seed=seed, groups=groups)
    empty = [k for k, v in splits.items() if not v]
    if empty:
        skips.write(out / SKIPPED_FILE)
        raise DataImportError(f"{table}: the 70 / 10 / 20 split of {len(ids)} usable images (by "
                              f"{'patient' if groups else 'image'}) leaves {' and '.join(empty)} empty; fine-tuning "
                              f"validates and tests on them: add images (or patients)")
    row = {i: k for k, i in enumerate(ids)}
    write_split_files(out / "splits", splits, ratio_subsets(splits["train"], y[[row[i] for i in splits["train"]]]))
    write_if_changed(out / "boxes.csv", "image_id,label,x0,y0,x1,y1\n")
    skips.write(out / SKIPPED_FILE)
    task = "binary" if len(cls) == 1 else "multilabel"
    name = name or out.name
    summary = {"name": name, "task": task, "classes": cls, "image_size": image_size, "studies": 0,
               "images": len(ids), "positives": {c: int(v) for c, v in zip(cls, y.sum(0))},
               "splits": {k: len(v) for k, v in splits.items()}, "split_by": "patient" if groups else "image",
               "skipped": dict(sorted(skips.counts.items())), "rendered_images": cache.rendered,
               "input_changes": changes, "seconds": round(time.perf_counter() - t0, 1)}
    domain = {"name": name, "task": task, "classes": cls, "image_size": image_size,
              "source": f"imported from {Path(table).name} and {images_dir}",
              "attribution": "the user's own labelled images (their licence; nothing was uploaded)"}
    write_if_changed(out / "domain.json", json.dumps(domain, indent=2) + "\n")
    write_if_changed(out / SUMMARY_FILE, json.dumps({k: v for k, v in summary.items() if k != "seconds"},
                                                    indent=2) + "\n")
    if log:
        log(format_summary(summary, out).replace(f"{summary['studies']:,} studies, ", ""))
    return summary
