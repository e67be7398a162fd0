"""The Indiana University chest X-ray report corpus (IU X-ray / Open-i), read from torchxrayvision.

``pip install torchxrayvision`` ships ``torchxrayvision/data/NLMCXR_reports.tgz``: 3,955 XML files
``ecgen-radiology/N.xml`` (Demner-Fushman et al., JAMIA 2016; licence CC BY-NC-ND 4.0: the files are
read from the installed package at run time and never copied). :func:`load_iu_reports` reads the
archive in memory with :mod:`tarfile` and parses each file with :mod:`xml.etree.ElementTree` into a
:class:`~refers_lite.data.reports.records.StudyRecord` (``source="iu"``):

* ``study_id``: the file stem (``"1000"`` for ``ecgen-radiology/1000.xml``);
* ``findings`` / ``impression``: the ``AbstractText`` elements labelled ``FINDINGS`` / ``IMPRESSION``
  (absent or empty -> ``""``), the only two sections the paper keeps (Methods);
* ``images``: one :class:`~refers_lite.data.reports.records.ImageRef` per ``parentImage`` (attribute ``id``);
* ``mesh``: the raw ``<MeSH><major>`` strings, e.g. ``"Pulmonary Atelectasis/base/left"``.

Bad input never crashes the parse: each problem is logged (naming the member file) and counted in
the returned :class:`~collections.Counter`:

* ``malformed_xml`` (skipped), ``duplicate_id`` (skipped), ``not_xml`` (a non-``.xml`` member, skipped);
* ``not_utf8`` (kept; undecodable bytes become U+FFFD);
* ``missing_findings`` / ``missing_impression`` (kept; the section element is absent altogether;
  an empty section is normal and not counted), ``no_images`` (kept: text-only uses want it).

View rule
---------
Each image first gets a view from three per-image sources, the first one that speaks wins:

1. ``nlmcxr_tsne_pa.csv.gz`` ``tsne-view`` (``PA`` -> frontal, ``L`` -> lateral): derived from the
   pixels by torchxrayvision's authors to repair the noisy DICOM tags. It labels 3,851 images, in
   practice one image per study (every two-image study has exactly one image in it).
2. ``nlmcxr_dicom_metadata.csv.gz`` ``Patient Orientation``: the first letter is the direction of
   the image rows, ``L``/``R`` (patient left/right) -> frontal, ``A``/``P`` (anterior/posterior)
   -> lateral.
3. The same table's ``View Position`` (``PA``/``AP`` -> frontal; ``LL``/``RL``/``LATERAL``/
   ``LARGE LATERAL`` -> lateral).
4. Otherwise ``"unknown"``.

5. Study level (:func:`study_views`, ``complete_pairs=True``): in a study of exactly two images of
   which exactly one has a t-SNE view, the other image gets the complementary view (an IU study
   is a "PA and Lateral" pair), overriding the DICOM tags.

Why (measured by :func:`view_agreement` on the real corpus, torchxrayvision 1.5.7): the DICOM tags
of a study's frontal image are often copied onto its lateral. Where both speak, t-SNE and
``Patient Orientation`` disagree on 193 of 2,249 images (8.6%), t-SNE and ``View Position`` on 198
of 2,467 (8.0%); ``Patient Orientation`` and ``View Position`` never disagree (0 of 4,479: they are
the same copied tag, so the second one adds nothing to the first where both exist). In the 2,834
two-image studies whose t-SNE image is frontal, the DICOM tags of the other image say frontal in
1,092, lateral in 687 and nothing in 1,055. With steps 1-4 only, the 7,470 images are 4,943
frontal, 1,322 lateral, 1,205 unknown, and the 3,208 two-image studies are 1,006 frontal+lateral,
1,092 frontal+frontal, 1,055 frontal+unknown, 47 lateral+unknown, 8 lateral+lateral. With step 5:
3,906 frontal, 3,461 lateral, 103 unknown; all 3,208 two-image studies are frontal+lateral.
Studies of one or of 3-5 images keep their per-image views (a one-image study may be either).
"""
from __future__ import annotations

import dataclasses
import csv
import functools
import gzip
import importlib.util
import logging
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .records import ImageRef, StudyRecord

log = logging.getLogger(__name__)

REPORTS_TGZ = "NLMCXR_reports.tgz"
METADATA_CSV = "nlmcxr_dicom_metadata.csv.gz"
TSNE_CSV = "nlmcxr_tsne_pa.csv.gz"
INSTALL_HINT = "pip install torchxrayvision"
ATTRIBUTION = ("Indiana University chest X-ray reports (Demner-Fushman et al., JAMIA 2016; Open-i, National Library "
               "of Medicine), CC BY-NC-ND 4.0, read from the torchxrayvision package")

_TSNE = {"PA": "frontal", "AP": "frontal", "L": "lateral"}
_ORIENTATION = {"L": "frontal", "R": "frontal", "A": "lateral", "P": "lateral"}
_VIEW_POSITION = {"PA": "frontal", "AP": "frontal", "LL": "lateral", "RL": "lateral", "LATERAL": "lateral",
                  "LARGE LATERAL": "lateral"}


def iu_data_dir() -> Path:
    """torchxrayvision's data folder (``os.path.dirname(torchxrayvision.__file__)/data``), found
    without importing the package (its import pulls in torch and image libraries: seconds)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the IU X-ray reports ship with torchxrayvision, which is not installed: "
                                f"`{INSTALL_HINT}`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def default_reports_path() -> Path:
    return iu_data_dir() / REPORTS_TGZ


# ----------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class ViewSources:
    """What each table says about one image, already mapped to frontal/lateral (None: silent)."""
    tsne: str | None = None
    orientation: str | None = None
    view_position: str | None = None


def _orientation_view(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    letters = re.findall(r"[A-Za-z]", value)  # "['L', 'F']" -> L, F
    return _ORIENTATION.get(letters[0].upper()) if letters else None


def _lookup(table: Mapping[str, str], value: object) -> str | None:
    return table.get(value.strip().upper()) if isinstance(value, str) else None


def _read_csv_columns(path: Path, columns: tuple[str, ...]) -> list[list[str]]:
    """The named columns of a (gzipped) CSV, as strings ("" when empty); plain csv: no pandas import."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        idx = [header.index(c) for c in columns]
        return [[row[i] if i < len(row) else "" for i in idx] for row in reader]


@functools.lru_cache(maxsize=4)
def load_view_sources(data_dir: str | Path | None = None) -> dict[str, ViewSources]:
    """Per image id, the view each table gives. Missing tables give an empty mapping (all unknown)."""
    data_dir = Path(data_dir) if data_dir is not None else iu_data_dir()
    tsne, meta = data_dir / TSNE_CSV, data_dir / METADATA_CSV
    out: dict[str, dict[str, str | None]] = {}
    if tsne.is_file():
        for image_id, v in _read_csv_columns(tsne, ("imageid", "tsne-view")):
            out.setdefault(image_id, {})["tsne"] = _lookup(_TSNE, v)
    if meta.is_file():
        for image_id, vp, po in _read_csv_columns(meta, ("imageid", "View Position", "Patient Orientation")):
            d = out.setdefault(image_id, {})
            d["orientation"] = _orientation_view(po)
            d["view_position"] = _lookup(_VIEW_POSITION, vp)
    return {k: ViewSources(**v) for k, v in out.items()}


def decide_view(sources: ViewSources | None) -> str:
    """The per-image rule (steps 1-4): t-SNE, else Patient Orientation, else View Position."""
    if sources is None:
        return "unknown"
    return sources.tsne or sources.orientation or sources.view_position or "unknown"


_OTHER = {"frontal": "lateral", "lateral": "frontal"}


def study_views(image_ids: list[str], sources: Mapping[str, ViewSources], complete_pairs: bool = True
                ) -> list[str]:
    """The views of one study's images: :func:`decide_view` per image, then (``complete_pairs``)
    step 5: in a two-image study where exactly one image has a t-SNE view, the other image gets the
    complementary view."""
    found = [sources.get(i) for i in image_ids]
    views = [decide_view(s) for s in found]
    if complete_pairs and len(views) == 2:
        has_tsne = [s is not None and s.tsne is not None for s in found]
        if sum(has_tsne) == 1:
            k = has_tsne.index(True)
            views[1 - k] = _OTHER[views[k]]
    return views


def view_agreement(records: Iterable[StudyRecord] | None = None,
                   data_dir: str | Path | None = None) -> dict[str, object]:
    """How often the view sources disagree, over the images of ``records`` (default: the IU corpus).

    Returns, for each pair of sources, ``{"both": images where both speak, "disagree": n}``;
    ``"tsne_frontal_partner"``: in two-image studies with one t-SNE frontal image, what the DICOM
    tags say about the other image; ``"views_per_image"`` / ``"two_image_studies_per_image"``: decided
    views (and sorted view pairs of two-image studies) with the per-image rule only; ``"views"`` /
    ``"two_image_studies"``: the same with the full rule (pair completion included).
    """
    if records is None:
        records = load_iu_reports()[0]
    sources = load_view_sources(data_dir)
    pairs = {"tsne_vs_orientation": ("tsne", "orientation"), "tsne_vs_view_position": ("tsne", "view_position"),
             "orientation_vs_view_position": ("orientation", "view_position")}
    result: dict[str, object] = {name: {"both": 0, "disagree": 0} for name in pairs}
    views: dict[bool, Counter[str]] = {False: Counter(), True: Counter()}
    two: dict[bool, Counter[tuple[str, ...]]] = {False: Counter(), True: Counter()}
    partner: Counter[str] = Counter()
    for rec in records:
        ids = [i.image_id for i in rec.images]
        for image_id in ids:
            s = sources.get(image_id)
            if s is None:
                continue
            for name, (a, b) in pairs.items():
                va, vb = getattr(s, a), getattr(s, b)
                if va and vb:
                    result[name]["both"] += 1
                    result[name]["disagree"] += va != vb
        for complete in (False, True):
            v = study_views(ids, sources, complete_pairs=complete)
            views[complete].update(v)
            if len(v) == 2:
                two[complete][tuple(sorted(v))] += 1
        if len(ids) == 2:
            found = [sources.get(i) or ViewSources() for i in ids]
            if [f.tsne for f in found].count("frontal") == 1 and [f.tsne for f in found].count(None) == 1:
                other = found[0] if found[0].tsne is None else found[1]
                partner[other.orientation or other.view_position or "silent"] += 1
    result["tsne_frontal_partner"] = dict(partner)
    result["views_per_image"] = dict(views[False])
    result["two_image_studies_per_image"] = dict(two[False])
    result["views"] = dict(views[True])
    result["two_image_studies"] = dict(two[True])
    return result


# --------------------------------------------------------------------------------------- parsing
def _section(root: ET.Element, label: str) -> str | None:
    """Text of the AbstractText with this Label ("" when empty), None when the element is absent."""
    for el in root.iter("AbstractText"):
        if (el.get("Label") or "").strip().upper() == label:
            return "".join(el.itertext()).strip()
    return None


def parse_report_xml(data: bytes, member: str, views: Mapping[str, ViewSources] | None = None
                     ) -> tuple[StudyRecord | None, list[str]]:
    """One report file's bytes -> (record or None when skipped, problems). Never raises."""
    problems: list[str] = []
    try:  # the parser reads the encoding the file declares (ISO-8859-1, UTF-16 with its byte-order mark, ...)
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError) as e:
        try:
            data.decode("utf-8")
            root = None  # valid UTF-8 (or declared otherwise): the XML itself is broken
        except UnicodeDecodeError as bad:  # bytes that are not UTF-8 and declare nothing else: read as Latin-1
            log.warning("IU X-ray %s: not valid UTF-8 and no other encoding declared (%s); read as Latin-1",
                        member, bad.reason)
            problems.append("not_utf8")
            try:
                root = ET.fromstring(data.decode("latin-1"))
            except (ET.ParseError, ValueError):
                root = None
        if root is None:
            log.warning("IU X-ray %s: malformed XML (%s); skipped", member, e)
            return None, problems + ["malformed_xml"]
    study_id = Path(member).stem
    findings, impression = _section(root, "FINDINGS"), _section(root, "IMPRESSION")
    for name, value in (("findings", findings), ("impression", impression)):
        if value is None:
            log.info("IU X-ray %s: no %s section; kept with an empty one", member, name.upper())
            problems.append(f"missing_{name}")
    image_ids = [i for i in (el.get("id", "").strip() for el in root.iter("parentImage")) if i]
    images = [ImageRef(image_id=i, view=v) for i, v in zip(image_ids, study_views(image_ids, views or {}))]
    if not images:
        log.info("IU X-ray %s: no images (parentImage); kept for text-only use", member)
        problems.append("no_images")
    mesh = [t for t in ((el.text or "").strip() for el in root.findall("./MeSH/major")) if t]
    record = StudyRecord(study_id=study_id, findings=findings or "", impression=impression or "",
                         images=images, mesh=mesh, source="iu")
    return record, problems


def _parse_archive(path: Path, views: Mapping[str, ViewSources]) -> tuple[tuple[StudyRecord, ...], Counter]:
    problems: Counter[str] = Counter()
    records: list[StudyRecord] = []
    seen: set[str] = set()
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"{path}: cannot read the IU X-ray report archive ({e}); reinstall it with "
                         f"`{INSTALL_HINT}`") from e
    with tf:
        for member in tf:
            if not member.isfile():
                continue
            if not member.name.lower().endswith(".xml"):
                log.warning("IU X-ray %s: not an .xml file; skipped", member.name)
                problems["not_xml"] += 1
                continue
            fh = tf.extractfile(member)
            record, found = parse_report_xml(fh.read() if fh else b"", member.name, views)
            problems.update(found)
            if record is None:
                continue
            if record.study_id in seen:
                log.warning("IU X-ray %s: report id %s seen before; skipped", member.name, record.study_id)
                problems["duplicate_id"] += 1
                continue
            seen.add(record.study_id)
            records.append(record)
    records.sort(key=lambda r: (len(r.study_id), r.study_id))  # numeric order for numeric ids
    return tuple(records), problems


@functools.lru_cache(maxsize=8)
def _cached_parse(path: str, mtime: float, size: int, view_dir: str | None
                  ) -> tuple[tuple[StudyRecord, ...], Counter]:
    views = load_view_sources(view_dir) if view_dir is not None else {}
    return _parse_archive(Path(path), views)


def load_iu_reports(path: str | Path | None = None, view_dir: str | Path | None = None
                    ) -> tuple[list[StudyRecord], Counter]:
    """All parsed IU X-ray reports and the Counter of parse problems (see the module docstring).

    ``path``: the report archive (default: torchxrayvision's ``NLMCXR_reports.tgz``). ``view_dir``:
    the folder holding the two view tables (default: the archive's folder; images missing from the
    tables, or tables missing, give ``"unknown"``). The parse is cached in memory (keyed by path,
    modification time and size); each call returns fresh copies, free to modify.
    """
    path = Path(path) if path is not None else default_reports_path()
    if not path.is_file():
        raise FileNotFoundError(f"IU X-ray report archive not found: {path}. It ships with torchxrayvision: "
                                f"`{INSTALL_HINT}`")
    view_dir = Path(view_dir) if view_dir is not None else path.parent
    has_tables = (view_dir / TSNE_CSV).is_file() or (view_dir / METADATA_CSV).is_file()
    st = path.stat()
    records, problems = _cached_parse(str(path.resolve()), st.st_mtime, st.st_size,
                                      str(view_dir.resolve()) if has_tables else None)
    copies = [dataclasses.replace(r, images=[dataclasses.replace(i) for i in r.images], mesh=list(r.mesh))
              for r in records]
    return copies, Counter(problems)
