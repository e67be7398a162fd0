"""The built source domain as pre-training studies: uint8 views from the image cache, report ids.

``refers-lite data build`` writes the source domain (``refers_lite.data.synthesis.domain_build.build_source``)::

    <root>/cache/        uint8 S x S radiographs (refers_lite.data.loading.image_cache), one row per image
                         with image_id, view, study_id, ...
    <root>/studies.csv   study_id, split, patient, image_ids (";"-joined), views (";"-joined),
                         findings, unrendered, text

:class:`SourceStudies` serves one split of it in the item format of the pre-training loop
(:mod:`refers_lite.data.loading.studies`), except that the pixels stay uint8::

    {"images": uint8 tensor (n_views, 1, S, S), "report_ids": [BOS, ..., EOS], "text": str, "study_id": str}

Why uint8: a study is read with one :meth:`ImageCache.images` call (a copy out of the page cache,
no decoding), a DataLoader worker moves a quarter of the bytes of float32, and the crop, rotation
and brightness / contrast are done on whole batches on the device
(:mod:`refers_lite.data.loading.gpu_augment`), where the conversion to float happens too.

Everything that can be wrong with the files is checked once, in ``__init__``, and named with its
file: a missing ``studies.csv`` or column, an unknown split, a study without images or text, an
image id the cache does not hold. The report ids are computed there too (the IU corpus is ~3,800
studies: well under a second). The dataset keeps flat numpy arrays, not per-study Python lists, so
it pickles cheaply into DataLoader workers; the cache drops its memory maps when pickled.

:func:`write_placeholder_source` writes a small folder in the same layout, with smooth grey
placeholder images, for tests and benchmarks.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .image_cache import ImageCache, build_cache, checked_index
from ..reports.report_tokenizer import ReportTokenizer
from ..synthesis.source_domain import render_image_id
from ..reports.splits import SPLITS, make_splits

__all__ = ["SourceStudies", "SourceRadiographs", "write_placeholder_source", "STUDIES_FILE", "CACHE_DIR", "TOKENIZER_FILE",
           "REQUIRED_COLUMNS"]

STUDIES_FILE = "studies.csv"
CACHE_DIR = "cache"
TOKENIZER_FILE = "report_tokenizer.json"
REQUIRED_COLUMNS = ("study_id", "split", "image_ids", "views", "text")  # what this dataset reads
ALL_COLUMNS = ("study_id", "split", "patient", "image_ids", "views", "findings", "unrendered", "labels", "text")


def resolve_report_tokenizer(root: Path, report_tokenizer) -> ReportTokenizer:
    """A ReportTokenizer as given, loaded from a path, or found next to the data (see SourceStudies)."""
    if isinstance(report_tokenizer, ReportTokenizer):
        return report_tokenizer
    if report_tokenizer is not None:
        path = Path(report_tokenizer)
        if not path.is_file():
            raise FileNotFoundError(f"report tokenizer not found: {path}")
        return ReportTokenizer.load(path)
    candidates = [root / TOKENIZER_FILE, root.parent.parent / "iu_xray" / TOKENIZER_FILE]
    for path in candidates:
        if path.is_file():
            return ReportTokenizer.load(path)
    raise FileNotFoundError(f"no report tokenizer for the source domain {root}: looked for {candidates[0]} and "
                            f"{candidates[1]}; make it with `refers-lite data reports` (writes "
                            f"data/iu_xray/{TOKENIZER_FILE}) or pass report_tokenizer=")


def _read_studies(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: not a source domain folder (build one with `refers-lite "
                                f"data build`, or import your own studies with `refers-lite data import`)")
    try:  # every column as text: study ids such as "0012" stay strings, an empty cell stays ""
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from e
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}, need "
                         f"{list(REQUIRED_COLUMNS)}")
    return df


class SourceStudies(Dataset):
    """One split (``"train"``, ``"validation"``, ``"test"``, or None for all) of a built source domain.

    ``root``: the folder ``build_source`` wrote (``studies.csv`` + ``cache/``).
    ``report_tokenizer``: a :class:`ReportTokenizer`, a path to its JSON, or None to use
    ``root/report_tokenizer.json`` if present, else ``root/../../iu_xray/report_tokenizer.json``
    (the layout ``data/synthetic/source`` next to ``data/iu_xray``); False: the films only, no report is
    tokenised (items then have no ``report_ids``; :class:`SourceRadiographs` opens the folder so).
    ``verify``: check the cache shards' sha256 on opening: ``"auto"`` (default) those whose size or modification
    time changed since they last matched (:meth:`ImageCache.open`), ``True`` all, ``False`` none.
    ``renders``: how many of each study's renderings to serve (a domain built with ``source_renders`` > 1 has
    several films per report, see :func:`~refers_lite.data.synthesis.source_domain.plan_source_items`). Item ``i`` is study
    ``i % n_studies`` in render ``i // n_studies``, so ``len`` is ``n_studies * renders`` and an epoch pairs every
    report with each of its first ``renders`` films once.
    Items: ``{"images": (n_views, 1, S, S) uint8 tensor (its own memory), "report_ids": list[int],
    "text": str, "study_id": str}``.
    """

    def __init__(self, root, split: str | None = "train", report_tokenizer=None, max_report_len: int = 128,
                 verify: bool | str = "auto", renders: int = 1):
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS} or None (all studies)")
        self.root = Path(root)
        self.split = split
        path = self.root / STUDIES_FILE
        df = _read_studies(path)
        bad_split = df.loc[~df["split"].isin(SPLITS), ["study_id", "split"]]
        if len(bad_split):
            sid, name = bad_split.iloc[0]
            raise ValueError(f"{path}: study {sid!r} has unknown split {name!r}; expected one of {SPLITS}")
        dup = df["study_id"][df["study_id"].duplicated()]
        if len(dup):
            raise ValueError(f"{path}: study {dup.iloc[0]!r} appears more than once")
        if split is not None:
            df = df[df["split"] == split]
        if int(renders) != renders or renders < 1:
            raise ValueError(f"renders must be a whole number >= 1, got {renders!r}")
        self.renders = int(renders)
        if self.renders > 1:
            built = pd.to_numeric(df["renders"], errors="coerce") if "renders" in df.columns else None
            have = 1 if built is None or not len(df) else built.min()
            if not have >= self.renders:  # NaN (an unreadable cell) fails too
                raise ValueError(f"{path}: {self.renders} renders of every study asked for, but the domain holds "
                                 f"{'only ' + str(int(have)) if have == have else 'unreadable render counts'} (rebuild "
                                 f"it with `refers-lite data build --renders {self.renders}`, or set data.renders=1)")

        self.cache = ImageCache.open(self.root / CACHE_DIR, verify=verify)
        cpath = self.cache.root
        if "image_id" not in self.cache.index.columns:
            raise ValueError(f"{cpath}: the image cache index has no 'image_id' column "
                             f"(columns: {list(self.cache.index.columns)})")
        item_of = dict(zip(self.cache.index["image_id"].astype(str), self.cache.index["item"].tolist()))

        per_study: list[list[int]] = []  # cache items of render 0, study by study
        for sid, ids, views, text in zip(df["study_id"], df["image_ids"], df["views"], df["text"]):
            image_ids = [s for s in ids.split(";") if s.strip()]
            if not image_ids:
                raise ValueError(f"{path}: study {sid!r} has no images (empty image_ids)")
            if len(views.split(";")) != len(image_ids):
                raise ValueError(f"{path}: study {sid!r} lists {len(image_ids)} image(s) but "
                                 f"{len(views.split(';'))} view(s): {ids!r} / {views!r}")
            unknown = [i for i in image_ids if i not in item_of]
            if unknown:
                raise ValueError(f"{path}: study {sid!r}: image id {unknown[0]!r} is not in the image cache {cpath} "
                                 f"(rebuild the domain with `refers-lite data build`)")
            if not text.strip():
                raise ValueError(f"{path}: study {sid!r} has an empty report text")
            per_study.append([item_of[i] for i in image_ids])
        items: list[int] = [i for s in per_study for i in s]
        offsets = list(np.cumsum([0] + [len(s) for s in per_study]))
        for render in range(1, self.renders):  # render k: the same views, ids render_image_id(id, k)
            for sid, ids in zip(df["study_id"], df["image_ids"]):
                for image_id in (s for s in ids.split(";") if s.strip()):
                    rid = render_image_id(image_id, render)
                    if rid not in item_of:
                        raise ValueError(f"{path}: study {sid!r}: render {render} image {rid!r} is not in the image "
                                         f"cache {cpath} (rebuild the domain with `refers-lite data build`)")
                    items.append(item_of[rid])
                offsets.append(len(items))

        tok = None if report_tokenizer is False else resolve_report_tokenizer(self.root, report_tokenizer)
        self.report_tokenizer = tok  # also re-encodes side-swapped reports of flipped studies (MultiViewStudies)
        self.study_ids: list[str] = df["study_id"].tolist()
        self.texts: list[str] = df["text"].tolist()
        self._label_names: list[str] | None = df["labels"].tolist() if "labels" in df.columns else None
        self._findings: list[str] | None = df["findings"].tolist() if "findings" in df.columns else None
        self.max_report_len = int(max_report_len)
        reports = [tok.encode(t, self.max_report_len) if tok is not None else [] for t in self.texts]
        # flat arrays + offsets: a study's slices are [off[i], off[i + 1]); cheap to pickle into workers
        self._items = np.asarray(items, dtype=np.int64)  # (n_images,) cache items, study by study, render by render
        self._item_offsets = np.asarray(offsets, dtype=np.int64)  # (n_studies * renders + 1,)
        self._report_ids = np.asarray([t for r in reports for t in r], dtype=np.int32)  # (n_tokens,)
        self._report_offsets = np.cumsum([0] + [len(r) for r in reports], dtype=np.int64)  # (n_studies + 1,)

    def structured_labels(self) -> np.ndarray:
        """(n_studies, len(LABELS)) 0/1: the ``labels`` column of studies.csv (from the MeSH tags), or, for a
        folder without one, the labels the report-text extractor finds (``structured_labels.labels_from_texts``)."""
        from ..reports.structured_labels import LABEL_INDEX, LABELS, labels_from_texts
        if self._label_names is None:
            return labels_from_texts(self.texts).astype(np.float32)
        out = np.zeros((self.n_studies, len(LABELS)), np.float32)
        for i, names in enumerate(self._label_names):
            for name in filter(None, (n.strip() for n in names.split(";"))):
                if name not in LABEL_INDEX:
                    raise ValueError(f"{self.root / STUDIES_FILE}: study {self.study_ids[i]!r} has unknown label "
                                     f"{name!r}; known: {', '.join(LABELS)}")
                out[i, LABEL_INDEX[name]] = 1.0
        return out

    def rendered_findings(self) -> tuple[list[str], np.ndarray]:
        """The findings drawn into each study's films (the ``findings`` column of studies.csv): (names, sorted;
        (n_studies, len(names)) 0/1). What the pixels show, unlike the report-derived labels."""
        if self._findings is None:
            raise ValueError(f"{self.root / STUDIES_FILE} has no 'findings' column (rebuild the domain with "
                             f"`refers-lite data build`)")
        per_study = [set(filter(None, (f.strip() for f in cell.split(";")))) for cell in self._findings]
        names = sorted(set().union(*per_study)) if per_study else []
        column = {name: j for j, name in enumerate(names)}
        out = np.zeros((self.n_studies, len(names)), np.float32)
        for i, found in enumerate(per_study):
            out[i, [column[f] for f in found]] = 1.0
        return names, out

    def image_items(self) -> tuple[np.ndarray, np.ndarray]:
        """Every image of this split, of every render served: (cache items (n_images,), the study each belongs to
        (n_images,), an index into ``study_ids``)."""
        study = np.repeat(np.arange(len(self)) % self.n_studies, np.diff(self._item_offsets))
        return self._items.copy(), study

    @property
    def image_size(self) -> int:
        return self.cache.image_size

    @property
    def n_images(self) -> int:
        return len(self._items)

    @property
    def n_studies(self) -> int:
        return len(self.study_ids)

    def __len__(self) -> int:
        return self.n_studies * self.renders

    def __repr__(self) -> str:
        renders = f" x {self.renders} renders" if self.renders > 1 else ""
        return (f"SourceStudies({self.split or 'all'}: {self.n_studies:,} studies{renders}, {self.n_images:,} images "
                f"of {self.image_size}x{self.image_size} uint8, root='{self.root}')")

    def __getitem__(self, i) -> dict:
        i = checked_index(i, len(self), "study")
        items = self._items[self._item_offsets[i]:self._item_offsets[i + 1]]  # (n_views,) of render i // n_studies
        pixels = self.cache.images(items)  # (n_views, S, S) uint8, a fresh copy (not the memory map)
        i %= self.n_studies  # the study: its report and ids
        out = {"images": torch.from_numpy(pixels).unsqueeze(1),  # (n_views, 1, S, S)
               "text": self.texts[i], "study_id": self.study_ids[i]}
        if self.report_tokenizer is not None:
            out["report_ids"] = self._report_ids[self._report_offsets[i]:self._report_offsets[i + 1]].tolist()
        return out


class SourceRadiographs(Dataset):
    """Every radiograph of one split of a built source domain, one item per film, with its study's structured
    labels: the image-only view of :class:`SourceStudies` that label-supervised (LSP) and self-supervised (MoCo)
    pre-training read, over the same films REFERS is given (every render served).

    Items: ``{"image": (1, S, S) uint8, "labels": (len(LABELS),) float32 0/1, "index": i}`` (the fine-tuning loop's
    format, ``task`` multilabel); ``batch(indices)`` reads many films with one cache call: (B, 1, S, S) uint8.
    No report tokenizer is needed; the labels are read on first use.
    """

    task = "multilabel"

    def __init__(self, root, split: str | None = "train", verify: bool | str = "auto", renders: int = 1):
        from ..reports.structured_labels import LABELS
        self._studies = SourceStudies(root, split, report_tokenizer=False, verify=verify, renders=renders)
        self.root, self.split, self.cache = self._studies.root, split, self._studies.cache
        self.n_studies = self._studies.n_studies
        self.classes = list(LABELS)
        self.name = f"source {split or 'all'} (structured labels)"
        self.items, self._study = self._studies.image_items()  # (n_images,) cache items, (n_images,) their study
        if len(self.items) == 0:
            raise ValueError(f"{self.root}: the {split or 'whole'} split has no radiographs")

    @functools.cached_property
    def _labels(self) -> np.ndarray:  # (n_images, len(LABELS))
        return self._studies.structured_labels()[self._study]

    def labels_matrix(self) -> np.ndarray:
        return self._labels.copy()

    @property
    def image_size(self) -> int:
        return self.cache.image_size

    @property
    def fingerprint(self) -> dict:
        """What identifies these images: the cache's build fingerprint, the split and the count."""
        return {"cache": self.cache.fingerprint, "split": self.split, "n_images": len(self)}

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (f"SourceRadiographs({self.split or 'all'}: {len(self):,} radiographs of {self.n_studies:,} studies, "
                f"{self.image_size}x{self.image_size} uint8, root='{self.root}')")

    def __getitem__(self, i) -> dict:
        i = checked_index(i, len(self), "radiograph")
        return {"image": self.batch([i])[0], "labels": torch.from_numpy(self._labels[i].copy()), "index": i}

    def batch(self, indices) -> torch.Tensor:
        """Images ``indices`` -> uint8 (B, 1, S, S), a copy."""
        pixels = self.cache.images(self.items[np.asarray(indices, dtype=np.int64)])  # (B, S, S)
        return torch.from_numpy(pixels).unsqueeze(1)  # (B, 1, S, S)


# ---------------------------------------------------------------------------------------------
# placeholder data for tests and benchmarks

_PLACEHOLDER_SENTENCES = (
    ("the heart is normal in size.", "heart size is normal.", "the cardiomediastinal silhouette is within normal "
     "limits.", "the heart is mildly enlarged."),
    ("no pleural effusion.", "no pleural effusion or pneumothorax.", "small right pleural effusion.",
     "small left pleural effusion."),
    ("the lungs are clear.", "no focal airspace consolidation.", "mild bibasilar atelectasis.",
     "there is a nodule in the right upper lobe."),
    ("no acute osseous abnormality.", "degenerative changes of the thoracic spine.", ""),
)


def _placeholder_text(rng: np.random.Generator) -> str:
    return " ".join(s for group in _PLACEHOLDER_SENTENCES if (s := group[int(rng.integers(len(group)))]))


def _placeholder_film(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) uint8: blurred noise over a vertical gradient; smooth and grey, not a radiograph.

    The noise is blurred at a quarter of the size and upsampled (bicubic): the same look as blurring
    at full size, five times faster (placeholder sources of ~1,000 images are made in seconds)."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    coarse = max(8, size // 4)
    noise = gaussian_filter(rng.standard_normal((coarse, coarse)), sigma=max(1.0, coarse / 24), mode="reflect")
    noise = np.asarray(Image.fromarray(noise.astype(np.float32), mode="F").resize((size, size), Image.BICUBIC),
                       dtype=np.float64)  # (size, size)
    noise /= noise.std() + 1e-12
    gradient = np.linspace(0.3, 0.7, size)[:, None]  # (size, 1): darker at the top
    img = gradient + 0.07 * noise + rng.uniform(-0.05, 0.05)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _render_placeholder_shard(indices, meta: list[dict], seed: int, size: int):
    """``render_shard`` for build_cache: each image depends only on (seed, item)."""
    return [(_placeholder_film(np.random.default_rng([seed, i, 3]), size), meta[i]) for i in indices]


def write_placeholder_source(root, n_studies: int = 64, views_per_study: tuple[int, int] = (1, 3),
                             image_size: int = 256, seed: int = 0,
                             splits: tuple[float, float, float] = (0.7, 0.1, 0.2), renders: int = 1) -> Path:
    """Write a source-domain folder (``studies.csv``, ``cache/``, ``report_tokenizer.json``,
    ``domain.json``) of ``n_studies`` studies with ``views_per_study[0]..views_per_study[1]`` images
    each (inclusive), split train / validation / test by ``splits``; return ``root``.

    PLACEHOLDER DATA FOR TESTS AND BENCHMARKS, NOT RADIOGRAPHS: the images are blurred random noise
    over a vertical grey gradient, the reports are drawn from a few plausible sentences unrelated to
    the pixels. The same arguments give the same bytes. ``renders`` > 1 adds that many films per study (other
    placeholder images under :func:`~refers_lite.data.synthesis.source_domain.render_image_id`), as a built domain has.
    """
    lo, hi = views_per_study
    if not 1 <= lo <= hi:
        raise ValueError(f"views_per_study must be (min, max) with 1 <= min <= max, got {views_per_study}")
    if n_studies < 1:
        raise ValueError(f"n_studies must be >= 1, got {n_studies}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])
    study_ids = [str(k + 1) for k in range(n_studies)]  # numbers, as IU's: must be read back as strings
    split_of = {s: name for name, ids in make_splits(study_ids, splits, seed=seed).items() for s in ids}
    rows, meta = [], []
    for sid in study_ids:
        n_views = int(rng.integers(lo, hi + 1))
        views = ["lateral" if v % 2 else "frontal" for v in range(n_views)]
        image_ids = [f"PH{int(sid):05d}_{v}" for v in range(n_views)]
        meta += [{"image_id": i, "view": "lateral" if v == "lateral" else "pa", "patient": 0, "study_id": sid}
                 for i, v in zip(image_ids, views)]
        rows.append({"study_id": sid, "split": split_of[sid], "patient": 0, "image_ids": ";".join(image_ids),
                     "views": ";".join(views), "findings": "", "unrendered": "", "labels": "",
                     "text": _placeholder_text(rng)})
    first = list(meta)
    meta += [m | {"image_id": render_image_id(m["image_id"], k)} for k in range(1, renders) for m in first]
    fingerprint = {"kind": "placeholder", "n": len(meta), "n_studies": n_studies, "views": [lo, hi], "seed": seed,
                   "image_size": image_size, "version": 1} | ({"renders": renders} if renders > 1 else {})
    build_cache(root / CACHE_DIR, len(meta), functools.partial(_render_placeholder_shard, meta=meta, seed=seed,
                                                               size=image_size),
                fingerprint=fingerprint, image_size=image_size, shard_size=512, workers=1, progress=False)
    df = pd.DataFrame(rows, columns=list(ALL_COLUMNS))
    if renders > 1:
        df.insert(df.columns.get_loc("text"), "renders", renders)
    from ..reports.structured_labels import LABELS, labels_from_texts
    y = labels_from_texts(df["text"].tolist())  # (n, len(LABELS)): what the text says, as real studies' MeSH would
    df["labels"] = [";".join(LABELS[j] for j in np.flatnonzero(row)) for row in y]
    df.to_csv(root / STUDIES_FILE, index=False)
    ReportTokenizer.train(df.loc[df["split"] == "train", "text"].tolist() or df["text"].tolist()
                          ).save(root / TOKENIZER_FILE)
    pd.DataFrame(columns=["image_id", "label", "x0", "y0", "x1", "y1", "side"]).to_csv(root / "boxes.csv",
                                                                                       index=False)
    (root / "domain.json").write_text(json.dumps(
        {"name": "source", "kind": "source", "placeholder": True, "studies": n_studies, "images": len(meta),
         "image_size": image_size, "source": "placeholder for tests and benchmarks: blurred noise, not radiographs"},
        indent=2) + "\n")
    return root
