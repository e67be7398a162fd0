"""The real target datasets (and MIMIC-CXR-JPG's images) on a user's disk -> one kind of item -> a domain directory.

Nothing here downloads anything: each dataset needs an account or a site this code never
contacts. Point ``data_root`` at your copy, laid out as its release ships it. The tables are
parsed by torchxrayvision 1.5.7's dataset classes (``NIH_Dataset``, ``VinDr_Dataset``,
``NLMTB_Dataset``, ``COVID19_Dataset``; their labels are used as they define them), MIMIC-CXR by
:mod:`refers_lite.data.reports.mimic_cxr`; every image file is read and resized by
:mod:`refers_lite.data.real.real_radiograph` (the path is the one the torchxrayvision class would open).

=========  ====================================================================================
name       ``data_root`` layout (file names as released; ``.csv`` or ``.csv.gz``)
=========  ====================================================================================
nih        ``Data_Entry_2017_v2020.csv`` (or ``Data_Entry_2017.csv``), ``BBox_List_2017.csv``,
           ``images/00000001_000.png`` ... (the Kaggle copy's ``images_001/images/`` ... works too)
vindr      ``train.csv`` (Kaggle) or ``annotations/annotations_train.csv`` (PhysioNet),
           ``train/<image_id>.dicom``
shenzhen   ``CXR_png/CHNCXR_0001_0.png`` ... (the ``ChinaSet_AllFiles`` folder, or its parent);
           the last digit of the name is the label (1 = tuberculosis)
covid_t1   ``metadata.csv``, ``images/<filename>`` (a clone of ieee8023/covid-chestxray-dataset)
covid_t2   the same
mimic      ``mimic-cxr-2.0.0-metadata.csv.gz``, optional ``mimic-cxr-2.0.0-split.csv.gz``,
           ``files/p10/p10000032/s50414267/<dicom_id>.jpg``; reports ``files/.../s50414267.txt``
           under ``reports_root`` (default: ``data_root``, where the reports zip extracts alongside)
=========  ====================================================================================

Items (:class:`RealItem`): ``image_id`` (the dataset's own key: NIH ``Image Index``, VinBigData
``image_id``, Shenzhen file stem, COVID ``filename``, MIMIC ``dicom_id``), the image file, 0/1
labels for the dataset's class list, boxes, the patient id when the dataset has one (NIH
``Patient ID``, COVID ``patientid``, MIMIC ``subject_id``; VinBigData and Shenzhen have none) and
the view. A :class:`RealDataset` is a sequence of them; ``dataset[i]`` reads the image and gives
a :class:`RealSample`: uint8 ``(S, S)``, **aspect-preserving resize with zero padding** (never
cropped: every box and lesion stays in the picture), boxes mapped into that square.

Labels and tasks:

* nih (multilabel, :data:`NIH_CLASSES`): ``Finding Labels`` split on ``|`` as torchxrayvision does;
  every view (PA and AP), every image (not one per patient). Boxes: ``BBox_List_2017`` (given on the
  1024 x 1024 originals; ``Infiltrate`` is ``Infiltration``).
* vindr (multilabel, :data:`VINDR_CLASSES`): an image is positive for a class when any of its
  radiologists marked it (torchxrayvision's rule); boxes: every radiologist's box, as given.
* shenzhen (binary, :data:`SHENZHEN_CLASSES` = the positive class; 0 = normal).
* covid_t1 (binary, COVID-19 vs the rest): frontal X-rays (:data:`COVID_VIEWS`) with a known
  finding (torchxrayvision drops ``todo`` / ``Unknown``); positive when ``finding`` contains COVID-19.
* covid_t2 (binary, viral vs bacterial pneumonia): those of the same images whose finding is
  ``Pneumonia/Viral/...`` or ``Pneumonia/Bacterial/...``; positive = viral. COVID-19 is a viral
  pneumonia in the dataset's hierarchy (``Pneumonia/Viral/COVID-19``) and counts as viral.
* mimic: images only (pre-training); studies are those with a usable report (``load_mimic_reports``).

A binary domain stores one class column (the positive class); :data:`NEGATIVE_CLASS` names the 0.

Bad input:

* a missing folder or table raises :class:`RealDatasetError` naming what is missing, where it was
  looked for, and where the dataset comes from (URL, licence); a table without a needed column
  names the file and the columns;
* an image listed in the table but **absent** from disk is skipped (partial downloads are common:
  NIH ships in 12 archives), warned about and counted in ``skipped["missing_file"]``; none present
  at all is an error;
* an image file that **exists but cannot be decoded** (corrupt, truncated) stops
  :func:`prepare_real_domain` with :class:`~refers_lite.data.real.real_radiograph.ImageReadError` naming
  the file: a broken download should be fixed, not silently shrink the dataset. Images already
  rendered are kept (the cache resumes).

:func:`prepare_real_domain` writes the domain directory fine-tuning reads::

    <out>/domain.json        name, task, classes, image_size, source, attribution
    <out>/cache/             image cache; index: image_id, patient_id, view, file, orig_h, orig_w,
                             and one 0/1 column per class
    <out>/boxes.csv          image_id,label,x0,y0,x1,y1 in pixels of the stored square image
    <out>/splits/            split.csv + train_{1,10,100}pct_seed{0,1,2}.txt (70/10/20, grouped by patient where known)
    <out>/source_files.csv   the item table the cache was rendered from (absolute image paths)
    <out>/summary.json       counts: items, skipped by reason, boxes, split sizes

For ``mimic`` it writes ``cache/`` (index: image_id, study_id, patient_id, view, split, file,
orig_h, orig_w), ``source_files.csv``, ``summary.json`` and ``dataset.json`` (no labels, boxes or splits).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from ...files import require_csv_columns, sha256_file
from .real_radiograph import ImageReadError, Placement, letterbox, read_image

__all__ = [
    "COVID_T1_CLASSES",
    "COVID_T2_CLASSES",
    "COVID_VIEWS",
    "DATASETS",
    "NEGATIVE_CLASS",
    "NIH_CLASSES",
    "SHENZHEN_CLASSES",
    "VINDR_CLASSES",
    "ImageReadError",
    "RealDataset",
    "RealDatasetError",
    "RealItem",
    "RealSample",
    "SourceBox",
    "open_real_dataset",
    "prepare_real_domain",
    "read_covid",
    "read_mimic_images",
    "read_nih",
    "read_shenzhen",
    "read_vindr",
    "render_items",
]

# ChestX-ray14's 14 labels, in the order of Wang et al. (2017), spelled as in Data_Entry_2017.
NIH_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
               "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
# VinBigData's 14 local labels, spelled as in its train.csv ``class_name`` (class_id 0..13).
VINDR_CLASSES = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
                 "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
                 "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis")
SHENZHEN_CLASSES = ("Tuberculosis",)  # binary: 1 = tuberculosis, 0 = normal
COVID_T1_CLASSES = ("COVID-19",)  # binary: 1 = COVID-19, 0 = any other finding
COVID_T2_CLASSES = ("Viral",)  # binary: 1 = viral pneumonia, 0 = bacterial pneumonia
NEGATIVE_CLASS = {"shenzhen": "Normal", "covid_t1": "Other finding", "covid_t2": "Bacterial"}
# Frontal X-ray views of the COVID-19 collection's ``view`` column (lateral "L" and CT "Axial"/"Coronal" left out).
COVID_VIEWS = ("PA", "AP", "AP Supine", "AP semi erect")

# our VinBigData class -> torchxrayvision's VinDr_Dataset pathology name
_VINDR_XRV = {"Other lesion": "Other Lesion", "Pleural effusion": "Effusion",
              "Pleural thickening": "Pleural_Thickening", "Pulmonary fibrosis": "Pulmonary Fibrosis"}
_NIH_BOX_FRAME = (1024, 1024)  # (H, W): BBox_List_2017 coordinates are pixels of the 1024 x 1024 originals


@dataclass(frozen=True)
class _Info:
    name: str
    task: str  # "multilabel" | "binary" | "pretraining"
    classes: tuple[str, ...]
    title: str
    url: str
    licence: str
    citation: str

    @property
    def where(self) -> str:
        return f"{self.title} comes from {self.url} ({self.licence})"

    @property
    def attribution(self) -> str:
        return f"{self.title}: {self.citation} {self.url}. Licence: {self.licence}."


_NIH = _Info("nih", "multilabel", NIH_CLASSES, "NIH ChestX-ray14",
             "https://nihcc.app.box.com/v/ChestXray-NIHCC",
             "NIH Clinical Center, public with no restrictions on use; cite the paper",
             "Wang et al., ChestX-ray8: hospital-scale chest X-ray database and benchmarks, CVPR 2017.")
_VINDR = _Info("vindr", "multilabel", VINDR_CLASSES, "VinBigData Chest X-ray Abnormalities Detection (VinDr-CXR)",
               "https://www.kaggle.com/c/vinbigdata-chest-xray-abnormalities-detection "
               "(also https://physionet.org/content/vindr-cxr/1.0.0/)",
               "Kaggle competition data rules; PhysioNet Credentialed Health Data License 1.5.0",
               "Nguyen et al., VinDr-CXR: an open dataset of chest X-rays with radiologist's annotations, "
               "Scientific Data 2022.")
_SHENZHEN = _Info("shenzhen", "binary", SHENZHEN_CLASSES, "Shenzhen chest X-ray set (tuberculosis)",
                  "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets "
                  "(also https://www.kaggle.com/raddar/tuberculosis-chest-xrays-shenzhen)",
                  "National Library of Medicine, public; cite the papers",
                  "Jaeger et al., Two public chest X-ray datasets for computer-aided screening of pulmonary "
                  "diseases, Quant Imaging Med Surg 2014.")
_COVID_URL = "https://github.com/ieee8023/covid-chestxray-dataset"
_COVID_LICENCE = "each image under its own licence, given in metadata.csv's `license` column"
_COVID_CITE = "Cohen et al., COVID-19 image data collection: prospective predictions are the future, MELBA 2020."
_COVID_T1 = _Info("covid_t1", "binary", COVID_T1_CLASSES, "COVID-19 Image Data Collection (task 1: COVID-19 vs rest)",
                  _COVID_URL, _COVID_LICENCE, _COVID_CITE)
_COVID_T2 = _Info("covid_t2", "binary", COVID_T2_CLASSES,
                  "COVID-19 Image Data Collection (task 2: viral vs bacterial pneumonia)",
                  _COVID_URL, _COVID_LICENCE, _COVID_CITE)
_MIMIC = _Info("mimic", "pretraining", (), "MIMIC-CXR-JPG", "https://physionet.org/content/mimic-cxr-jpg/2.0.0/",
               "PhysioNet Credentialed Health Data License 1.5.0",
               "Johnson et al., MIMIC-CXR-JPG, a large publicly available database of labeled chest radiographs, "
               "arXiv:1901.07042, 2019.")
DATASETS: dict[str, _Info] = {i.name: i for i in (_NIH, _VINDR, _SHENZHEN, _COVID_T1, _COVID_T2, _MIMIC)}


class RealDatasetError(FileNotFoundError):
    """A dataset folder or table is missing or unusable; the message says what, where, and where to get it."""


# ----------------------------------------------------------------------------- items


@dataclass(frozen=True)
class SourceBox:
    """A box in the source picture's coordinates: pixels of the file, or of ``frame_hw`` when set."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class RealItem:
    image_id: str
    path: str  # absolute path of the image file
    labels: tuple[int, ...]  # 0/1 per class of the dataset
    boxes: tuple[SourceBox, ...] = ()
    patient_id: str | None = None
    view: str | None = None
    frame_hw: tuple[int, int] | None = None  # (H, W) the box coordinates refer to; None = the file's pixels
    extra: tuple[tuple[str, str], ...] = ()  # more string metadata for the cache index (MIMIC: study_id, split)


@dataclass(frozen=True)
class RealSample:
    image_id: str
    image: np.ndarray  # (S, S) uint8, dense = bright, letterboxed
    labels: np.ndarray  # (C,) int64 0/1
    boxes: list[tuple[str, float, float, float, float]]  # (label, x0, y0, x1, y1) in pixels of ``image``
    patient_id: str | None
    view: str | None
    placement: Placement


@dataclass(eq=False)
class RealDataset(Sequence):
    """A real dataset as a sequence of :class:`RealSample` (``dataset[i]`` reads image ``i`` from disk)."""

    name: str
    task: str
    classes: tuple[str, ...]
    items: list[RealItem]
    root: Path
    source: str
    attribution: str
    skipped: Counter = field(default_factory=Counter)
    image_size: int = 256

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        it = self.items[i]
        img, p = letterbox(read_image(it.path), self.image_size)  # (S, S)
        return RealSample(it.image_id, img, np.asarray(it.labels, dtype=np.int64),
                          _place_boxes(it, p), it.patient_id, it.view, p)

    def __iter__(self) -> Iterator[RealSample]:
        for i in range(len(self)):
            yield self[i]

    def label_matrix(self) -> np.ndarray:
        """(N, C) int64 0/1 labels of all items (no image is read)."""
        return np.asarray([it.labels for it in self.items], dtype=np.int64).reshape(len(self.items), len(self.classes))

    def sample(self, n: int | None) -> "RealDataset":
        """``n`` items (all for None), same metadata: those whose sha1(image_id) sorts first, kept in table
        order. Deterministic, spread over the whole table (not its first rows, which are often one class),
        and nested: a larger ``n`` holds every item of a smaller one."""
        if n is None or n >= len(self.items):
            return self
        if n < 1:
            raise ValueError(f"limit must be >= 1, got {n}")
        keys = [hashlib.sha1(it.image_id.encode("utf-8")).hexdigest() for it in self.items]
        chosen = sorted(sorted(range(len(keys)), key=keys.__getitem__)[:n])
        return RealDataset(self.name, self.task, self.classes, [self.items[k] for k in chosen], self.root,
                           self.source, self.attribution, Counter(self.skipped), self.image_size)


def _place_boxes(it: RealItem, p: Placement) -> list[tuple[str, float, float, float, float]]:
    out = []
    for b in it.boxes:
        x0, y0, x1, y1 = p.map_box(b.x0, b.y0, b.x1, b.y1, it.frame_hw)
        if x1 > x0 and y1 > y0:
            out.append((b.label, x0, y0, x1, y1))
    return out


# ----------------------------------------------------------------------------- table helpers


def _find(root: Path, names: Sequence[str], what: str, info: _Info) -> Path:
    """The first of ``names`` (relative to root; each also tried with .gz) that exists, else a clear error."""
    tried = []
    for n in names:
        for cand in (root / n, root / f"{n}.gz"):
            tried.append(cand)
            if cand.is_file():
                return cand
    raise RealDatasetError(f"{info.title}: {what} not found; looked for {', '.join(str(t) for t in tried)}. "
                           f"{info.where}.")


def _need_dir(path: Path, what: str, info: _Info) -> Path:
    if not path.is_dir():
        raise RealDatasetError(f"{info.title}: {what} folder not found: {path}. {info.where}.")
    return path


def _need_columns(path: Path, required: Sequence[str], info: _Info) -> None:
    require_csv_columns(path, required, f"{info.title}: the table")


@contextmanager
def _keep_numpy_seed():
    """torchxrayvision's dataset classes call np.random.seed(); keep the caller's global RNG state."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def _xrv():
    # torchxrayvision.models runs warnings.filterwarnings("ignore") on import, which would silence every
    # warning of the process (ours about skipped files too): import it with the filters saved and restored.
    with warnings.catch_warnings():
        import torchxrayvision as xrv
    return xrv


def _xrv_labels(ds, names: Sequence[str]) -> np.ndarray:
    """(N, len(names)) float labels from a torchxrayvision dataset (NaN where it has no such pathology)."""
    cols = []
    for n in names:
        if n in ds.pathologies:
            cols.append(np.asarray(ds.labels, dtype=np.float64)[:, list(ds.pathologies).index(n)])
        else:
            cols.append(np.zeros(len(ds.csv), dtype=np.float64))  # a class absent from this table: no positives
    return np.stack(cols, axis=1) if cols else np.zeros((len(ds.csv), 0))


def _present(items: list[RealItem], skipped: Counter, info: _Info, where: Path) -> list[RealItem]:
    """Drop items whose image file is absent (counted, warned); error when none is there."""
    kept = [it for it in items if os.path.isfile(it.path)]
    missing = len(items) - len(kept)
    if items and not kept:
        raise RealDatasetError(f"{info.title}: none of the {len(items):,} images listed is on disk under {where} "
                               f"(e.g. {items[0].path}). {info.where}.")
    if missing:
        skipped["missing_file"] += missing
        first = next(it.path for it in items if not os.path.isfile(it.path))
        warnings.warn(f"{info.title}: {missing:,} of {len(items):,} listed images are not on disk "
                      f"(e.g. {first}); they are skipped", stacklevel=3)
    return kept


def _check_unique(items: list[RealItem], info: _Info) -> None:
    seen: set[str] = set()
    for it in items:
        if it.image_id in seen:
            raise ValueError(f"{info.title}: image id {it.image_id!r} appears twice")
        seen.add(it.image_id)


def _dataset(info: _Info, items: list[RealItem], root: Path, skipped: Counter, source: str) -> RealDataset:
    _check_unique(items, info)
    return RealDataset(info.name, info.task, info.classes, items, root, source, info.attribution, skipped)


def _str_or_none(v) -> str | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


# ----------------------------------------------------------------------------- NIH ChestX-ray14


def _nih_image_index(root: Path) -> tuple[Path, dict[str, Path] | None]:
    """``images/`` (flat, as torchxrayvision expects), else the Kaggle copy's ``images_*/images/`` folders."""
    flat = root / "images"
    if flat.is_dir():
        return flat, None
    parts = sorted(p for p in root.glob("images_*/images") if p.is_dir())
    if not parts:
        raise RealDatasetError(f"{_NIH.title}: images folder not found: {flat} (nor {root / 'images_001' / 'images'}, "
                               f"...). {_NIH.where}.")
    where: dict[str, Path] = {}
    for d in parts:
        with os.scandir(d) as it:
            for e in it:
                where.setdefault(e.name, d)
    return parts[0].parent.parent, where


def read_nih(data_root: str | Path, *, csv_path: str | Path | None = None,
             bbox_csv_path: str | Path | None = None) -> RealDataset:
    """NIH ChestX-ray14 through ``torchxrayvision.datasets.NIH_Dataset`` (every view, every image)."""
    root = _need_dir(Path(data_root), "dataset root", _NIH)
    csv_path = Path(csv_path) if csv_path else _find(root, ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv"],
                                                     "label table Data_Entry_2017_v2020.csv", _NIH)
    bbox_csv_path = Path(bbox_csv_path) if bbox_csv_path else _find(root, ["BBox_List_2017.csv"],
                                                                    "box table BBox_List_2017.csv", _NIH)
    for p in (csv_path, bbox_csv_path):
        if not p.is_file():
            raise RealDatasetError(f"{_NIH.title}: table not found: {p}. {_NIH.where}.")
    header = pd.read_csv(csv_path, nrows=0).columns
    sex = ["Patient Gender"] if "Patient Gender" in header else ["Patient Sex"]
    _need_columns(csv_path, ["Image Index", "Finding Labels", "View Position", "Patient ID", "Patient Age"] + sex,
                  _NIH)
    if len(pd.read_csv(bbox_csv_path, nrows=0).columns) < 6:
        raise ValueError(f"{_NIH.title}: {bbox_csv_path} should have the columns Image Index, Finding Label, "
                         f"Bbox [x,y,w,h] (6 values a row)")
    img_dir, kaggle = _nih_image_index(root)
    with _keep_numpy_seed():
        ds = _xrv().datasets.NIH_Dataset(imgpath=str(img_dir), csvpath=str(csv_path),
                                         bbox_list_path=str(bbox_csv_path), views=["*"], unique_patients=False)
    labels = _xrv_labels(ds, NIH_CLASSES)  # (N, 14)
    boxes: dict[str, list[SourceBox]] = {}
    bb = ds.pathology_maskscsv
    for name, lab, x, y, w, h in zip(bb["Image Index"], bb["Finding Label"], bb["x"], bb["y"], bb["w"], bb["h"]):
        if lab in NIH_CLASSES and np.isfinite([x, y, w, h]).all():
            boxes.setdefault(str(name), []).append(SourceBox(str(lab), float(x), float(y), float(x + w), float(y + h)))
    items = []
    for k, (name, pid, view) in enumerate(zip(ds.csv["Image Index"], ds.csv["patientid"], ds.csv["view"])):
        name = str(name)
        d = kaggle.get(name, img_dir) if kaggle is not None else img_dir
        items.append(RealItem(name, str(d / name), tuple(int(v == 1) for v in labels[k]),
                              tuple(boxes.get(name, ())), _str_or_none(pid), _str_or_none(view), _NIH_BOX_FRAME))
    skipped: Counter = Counter()
    items = _present(items, skipped, _NIH, img_dir)
    return _dataset(_NIH, items, root, skipped, f"NIH_Dataset({csv_path.name}, {bbox_csv_path.name}) under {root}")


# ----------------------------------------------------------------------------- VinBigData


def read_vindr(data_root: str | Path, *, csv_path: str | Path | None = None) -> RealDataset:
    """VinBigData (VinDr-CXR) training set through ``torchxrayvision.datasets.VinDr_Dataset``."""
    root = _need_dir(Path(data_root), "dataset root", _VINDR)
    csv_path = Path(csv_path) if csv_path else _find(root, ["train.csv", "annotations/annotations_train.csv"],
                                                     "annotation table train.csv", _VINDR)
    if not csv_path.is_file():
        raise RealDatasetError(f"{_VINDR.title}: table not found: {csv_path}. {_VINDR.where}.")
    _need_columns(csv_path, ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"], _VINDR)
    img_dir = _need_dir(root / "train", "image", _VINDR)
    with _keep_numpy_seed():
        ds = _xrv().datasets.VinDr_Dataset(imgpath=str(img_dir), csvpath=str(csv_path))
    labels = _xrv_labels(ds, [_VINDR_XRV.get(c, c) for c in VINDR_CLASSES])  # (N, 14)
    ours = {c.lower(): c for c in VINDR_CLASSES}
    boxes: dict[str, list[SourceBox]] = {}
    raw = ds.rawcsv
    for iid, cls, x0, y0, x1, y1 in zip(raw["image_id"], raw["class_name"], raw["x_min"], raw["y_min"],
                                         raw["x_max"], raw["y_max"]):
        lab = ours.get(str(cls).strip().lower())
        if lab is not None and np.isfinite(np.asarray([x0, y0, x1, y1], dtype=float)).all():
            boxes.setdefault(str(iid), []).append(SourceBox(lab, float(x0), float(y0), float(x1), float(y1)))
    items = [RealItem(str(iid), str(img_dir / f"{iid}.dicom"), tuple(int(v == 1) for v in labels[k]),
                      tuple(boxes.get(str(iid), ())), None, None, None)
             for k, iid in enumerate(ds.csv["image_id"])]
    skipped: Counter = Counter()
    items = _present(items, skipped, _VINDR, img_dir)
    return _dataset(_VINDR, items, root, skipped, f"VinDr_Dataset({csv_path.name}) under {root}")


# ----------------------------------------------------------------------------- Shenzhen


_NLMTB_NAME = re.compile(r"^.+_[01]\.png$")


def read_shenzhen(data_root: str | Path) -> RealDataset:
    """Shenzhen TB set through ``torchxrayvision.datasets.NLMTB_Dataset``.

    ``CXR_png/*_0.png`` are normal, ``*_1.png`` tuberculosis."""
    root = _need_dir(Path(data_root), "dataset root", _SHENZHEN)
    if not (root / "CXR_png").is_dir() and (root / "ChinaSet_AllFiles" / "CXR_png").is_dir():
        root = root / "ChinaSet_AllFiles"
    img_dir = _need_dir(root / "CXR_png", "image (ChinaSet_AllFiles/CXR_png)", _SHENZHEN)
    bad = [n for n in sorted(os.listdir(img_dir)) if n.endswith(".png") and not _NLMTB_NAME.match(n)]
    if bad:
        raise ValueError(f"{_SHENZHEN.title}: {img_dir / bad[0]}: the file name must end in _0.png (normal) or "
                         f"_1.png (tuberculosis), as in CHNCXR_0001_0.png")
    if not any(n.endswith(".png") for n in os.listdir(img_dir)):
        raise RealDatasetError(f"{_SHENZHEN.title}: no .png images in {img_dir}. {_SHENZHEN.where}.")
    with _keep_numpy_seed():
        ds = _xrv().datasets.NLMTB_Dataset(imgpath=str(root))
    labels = _xrv_labels(ds, ["Tuberculosis"])  # (N, 1)
    items = [RealItem(Path(f).stem, str(img_dir / f), (int(labels[k, 0] == 1),), (), None, "PA", None)
             for k, f in enumerate(ds.csv["fname"])]
    return _dataset(_SHENZHEN, items, root, Counter(), f"NLMTB_Dataset under {root}")


# ----------------------------------------------------------------------------- COVID-19 image data collection


def read_covid(data_root: str | Path, task: int = 1) -> RealDataset:
    """ieee8023/covid-chestxray-dataset through ``torchxrayvision.datasets.COVID19_Dataset``; task 1 or 2."""
    if task not in (1, 2):
        raise ValueError(f"COVID-19 task must be 1 (COVID-19 vs rest) or 2 (viral vs bacterial), got {task!r}")
    info = _COVID_T1 if task == 1 else _COVID_T2
    root = _need_dir(Path(data_root), "dataset root (a clone of covid-chestxray-dataset)", info)
    csv_path = _find(root, ["metadata.csv"], "table metadata.csv", info)
    _need_columns(csv_path, ["patientid", "offset", "finding", "view", "filename"], info)
    img_dir = _need_dir(root / "images", "image", info)
    with _keep_numpy_seed():
        ds = _xrv().datasets.COVID19_Dataset(imgpath=str(img_dir), csvpath=str(csv_path), views=list(COVID_VIEWS))
    lab = _xrv_labels(ds, ["COVID-19", "Viral", "Bacterial"])  # (N, 3)
    keep = ~np.isnan(lab).any(axis=1)  # rows whose finding is empty carry NaN labels
    skipped: Counter = Counter()
    skipped["no_finding_value"] += int((~keep).sum())
    if "modality" in ds.csv.columns:
        xray = ds.csv["modality"].fillna("X-ray").astype(str).str.strip().str.lower().eq("x-ray").to_numpy()
        skipped["not_x_ray"] += int((keep & ~xray).sum())
        keep &= xray
    if task == 1:
        y = lab[:, 0] == 1
    else:
        viral, bacterial = lab[:, 1] == 1, lab[:, 2] == 1
        pneumonia = viral ^ bacterial
        skipped["not_viral_or_bacterial"] += int((keep & ~pneumonia).sum())
        keep &= pneumonia
        y = viral
    items = [RealItem(str(f), str(img_dir / str(f)), (int(y[k]),), (), _str_or_none(pid), _str_or_none(v), None)
             for k, (f, pid, v) in enumerate(zip(ds.csv["filename"], ds.csv["patientid"], ds.csv["view"])) if keep[k]]
    skipped = Counter({k: v for k, v in skipped.items() if v})
    items = _present(items, skipped, info, img_dir)
    return _dataset(info, items, root, skipped, f"COVID19_Dataset({csv_path.name}, views {list(COVID_VIEWS)}) "
                                                f"under {root}")


# ----------------------------------------------------------------------------- MIMIC-CXR-JPG (pre-training images)


def read_mimic_images(data_root: str | Path, *, reports_root: str | Path | None = None,
                      metadata_csv: str | Path | None = None, split_csv: str | Path | None = None
                      ) -> RealDataset:
    """Every image of every MIMIC-CXR study with a usable report.

    Studies and their images come from :func:`refers_lite.data.reports.mimic_cxr.load_mimic_reports`.

    ``metadata_csv`` / ``split_csv`` default to ``mimic-cxr-2.0.0-metadata.csv(.gz)`` / ``-split.csv(.gz)``
    in ``data_root`` (the split is optional: without it the index's ``split`` column is empty).
    """
    from ..reports.mimic_cxr import load_mimic_reports

    root = _need_dir(Path(data_root), "MIMIC-CXR-JPG root", _MIMIC)
    metadata_csv = Path(metadata_csv) if metadata_csv else _find(
        root, ["mimic-cxr-2.0.0-metadata.csv"], "metadata table mimic-cxr-2.0.0-metadata.csv.gz", _MIMIC)
    if split_csv is None:
        for n in ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv"):
            if (root / n).is_file():
                split_csv = root / n
                break
    reports_root = Path(reports_root) if reports_root else root
    records, skipped = load_mimic_reports(reports_root, metadata_csv, split_csv)
    split_of = {}
    if split_csv is not None:
        from ..reports.mimic_cxr import mimic_official_splits

        split_of = mimic_official_splits(split_csv)
    items = [RealItem(ref.image_id, str(root / ref.path), (), (), r.subject_id, ref.view, None,
                      (("study_id", r.study_id), ("split", split_of.get(r.study_id, ""))))
             for r in records for ref in r.images]
    skipped = Counter({f"study_{k}": v for k, v in skipped.items()})
    items = _present(items, skipped, _MIMIC, root / "files")
    return _dataset(_MIMIC, items, root, skipped, f"mimic_cxr.load_mimic_reports({metadata_csv.name}) under {root}")


def open_real_dataset(name: str, data_root: str | Path, **kwargs) -> RealDataset:
    """The reader for ``name`` (one of :data:`DATASETS`); ``kwargs`` go to it (e.g. ``reports_root`` for mimic)."""
    if name == "covid":
        raise ValueError("the COVID-19 collection has two tasks: name 'covid_t1' (COVID-19 vs rest) or "
                         "'covid_t2' (viral vs bacterial)")
    readers = {"nih": read_nih, "vindr": read_vindr, "shenzhen": read_shenzhen,
               "covid_t1": functools.partial(read_covid, task=1), "covid_t2": functools.partial(read_covid, task=2),
               "mimic": read_mimic_images}
    if name not in readers:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(readers)}")
    return readers[name](data_root, **kwargs)


# ----------------------------------------------------------------------------- the image cache


_BASE_COLUMNS = ("image_id", "patient_id", "view", "file", "path")


def _write_table(ds: RealDataset, path: Path) -> None:
    """``source_files.csv``: one row per item, in cache order (what :func:`render_items` reads)."""
    extra_keys = [k for k, _ in ds.items[0].extra] if ds.items else []
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(list(_BASE_COLUMNS) + extra_keys + list(ds.classes))
        for it in ds.items:
            try:
                rel = os.path.relpath(it.path, ds.root)
            except ValueError:  # another drive (Windows)
                rel = it.path
            w.writerow([it.image_id, it.patient_id or "", it.view or "", rel, it.path]
                       + [v for _, v in it.extra] + list(it.labels))


@functools.lru_cache(maxsize=4)
def _load_table(path: str, label_columns: tuple[str, ...], mtime_ns: int, size: int) -> list[dict]:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in label_columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks label column(s) {missing}")
    rows = df.to_dict("records")
    for r in rows:
        for c in label_columns:
            r[c] = int(r[c])
    return rows


def render_items(table_csv: str, image_size: int, label_columns: tuple[str, ...],
                 indices: list[int]) -> list[tuple[np.ndarray, dict]]:
    """The cache's ``render_shard``: read and letterbox the images of rows ``indices`` of ``table_csv``.

    Used as ``functools.partial(render_items, table_csv, image_size, label_columns)`` so that it
    pickles small for worker processes (each worker reads the table once). Metadata per item: the
    table's columns except ``path`` (labels as int), plus ``orig_h`` / ``orig_w`` (the file's size).
    """
    st = os.stat(table_csv)
    rows = _load_table(table_csv, tuple(label_columns), st.st_mtime_ns, st.st_size)
    out = []
    for i in indices:
        r = rows[i]
        img = read_image(r["path"])  # (H, W) uint8; ImageReadError names the file
        square, _ = letterbox(img, image_size)  # (S, S)
        meta = {c: v for c, v in r.items() if c != "path"}
        meta["orig_h"], meta["orig_w"] = int(img.shape[0]), int(img.shape[1])
        out.append((square, meta))
    return out


def _write_boxes(ds: RealDataset, index: pd.DataFrame, path: Path, image_size: int) -> int:
    """``boxes.csv`` in pixels of the stored square image; returns the number of boxes written."""
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["image_id", "label", "x0", "y0", "x1", "y1"])
        for it, h, wd in zip(ds.items, index["orig_h"], index["orig_w"]):
            if not it.boxes:
                continue
            p = Placement.fit((int(h), int(wd)), image_size)
            for lab, x0, y0, x1, y1 in _place_boxes(it, p):
                w.writerow([it.image_id, lab, f"{x0:.2f}", f"{y0:.2f}", f"{x1:.2f}", f"{y1:.2f}"])
                n += 1
    return n


def _atomic_json(path: Path, obj: dict) -> None:
    from ...files import atomic_write
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def prepare_real_domain(name: str, data_root: str | Path, out_dir: str | Path, *, image_size: int = 256,
                        workers: int = 1, limit: int | None = None, seed: int = 0,
                        reports_root: str | Path | None = None, progress: bool = True) -> dict:
    """Read dataset ``name`` from ``data_root`` and write its domain directory to ``out_dir`` (module doc).

    ``name``: nih, vindr, shenzhen, covid_t1, covid_t2 or mimic. ``limit``: only N images, for a quick
    look (:meth:`RealDataset.sample`: chosen by a hash of the image id, after skipping absent files).
    ``seed``: the 70/10/20 split's seed (the 1/10/100% subsets use seeds 0, 1, 2). ``reports_root``: MIMIC reports, default ``data_root``.
    Returns the summary also written to ``summary.json``. Re-running with the same inputs reuses the
    cache; a run stopped by a corrupt image resumes after the file is fixed. The cache's fingerprint
    covers the item table (ids, paths, labels) and the image size, not the image bytes: after
    replacing image files in place under the same names, delete ``<out>/cache`` to re-render.
    """
    from ..loading.image_cache import build_cache

    kwargs = {"reports_root": reports_root} if name == "mimic" else {}
    if reports_root is not None and name != "mimic":
        raise ValueError("reports_root is only for mimic")
    ds = open_real_dataset(name, data_root, **kwargs).sample(limit)
    ds.image_size = image_size
    if not ds.items:
        raise RealDatasetError(f"{DATASETS[name].title}: no images to prepare under {data_root}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "source_files.csv"
    _write_table(ds, table)
    fingerprint = {"kind": "real_dataset", "dataset": name, "table_sha256": sha256_file(table), "image_size": image_size,
                   "resize": "letterbox: aspect-preserving, bilinear, zero padding", "version": 1}
    render = functools.partial(render_items, str(table.resolve()), image_size, tuple(ds.classes))
    cache = build_cache(out / "cache", len(ds), render, fingerprint=fingerprint, image_size=image_size,
                        workers=workers, desc=name, progress=progress)
    info = DATASETS[name]
    summary: dict = {"name": name, "data_root": str(Path(data_root)), "n_items": len(ds),
                     "skipped": dict(sorted(ds.skipped.items())), "image_size": image_size,
                     "resize": fingerprint["resize"]}
    if name == "mimic":
        summary["n_studies"] = int(cache.index["study_id"].nunique())
        _atomic_json(out / "dataset.json", {"name": name, "kind": "pretraining images", "image_size": image_size,
                                            "source": ds.source, "attribution": ds.attribution})
    else:
        from ..loading.label_ratios import ratio_subsets, split_items, write_split_files

        n_boxes = _write_boxes(ds, cache.index, out / "boxes.csv", image_size)
        ids = [it.image_id for it in ds.items]
        y = ds.label_matrix()  # (N, C)
        patients = [it.patient_id for it in ds.items]
        groups = [p if p is not None else f"image:{i}" for p, i in zip(patients, ids)] \
            if any(p is not None for p in patients) else None
        splits = split_items(ids, y, seed=seed, groups=groups)
        row = {i: k for k, i in enumerate(ids)}
        train = splits["train"]
        subsets = ratio_subsets(train, y[[row[i] for i in train]])
        write_split_files(out / "splits", splits, subsets)
        summary.update({"n_boxes": n_boxes, "splits": {k: len(v) for k, v in splits.items()},
                        "grouped_by_patient": groups is not None,
                        "positives": {c: int(v) for c, v in zip(ds.classes, y.sum(0))}})
        if name in NEGATIVE_CLASS:
            summary["negative_class"] = NEGATIVE_CLASS[name]
        _atomic_json(out / "domain.json", {"name": name, "task": info.task, "classes": list(ds.classes),
                                           "image_size": image_size, "source": ds.source,
                                           "attribution": ds.attribution})
    _atomic_json(out / "summary.json", summary)
    return summary
