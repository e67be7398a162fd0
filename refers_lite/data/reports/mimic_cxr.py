"""MIMIC-CXR on the user's disk -> :class:`~refers_lite.data.reports.records.StudyRecord` (``source="mimic"``).

MIMIC-CXR needs a credentialed PhysioNet account, so nothing here downloads anything: point the
functions at your own copy, in the official layouts.

* Reports (``mimic-cxr-reports.zip``, extracted)::

      REPORTS_ROOT/files/p10/p10000032/s50414267.txt

  folder ``p`` + the first two digits of the subject id, then ``p<subject_id>``, then
  ``s<study_id>.txt``. ``REPORTS_ROOT`` is the folder that holds ``files/`` (passing the ``files``
  folder itself is accepted too).
* MIMIC-CXR-JPG metadata ``mimic-cxr-2.0.0-metadata.csv.gz`` (one row per image; columns
  ``dicom_id, subject_id, study_id, ..., ViewPosition, ...``) and, optionally, the official split
  ``mimic-cxr-2.0.0-split.csv.gz`` (``dicom_id, study_id, subject_id, split`` with split in
  ``train / validate / test``). Plain ``.csv`` works as well as ``.csv.gz``.

Identifiers follow the folder names: ``study_id="s50414267"``, ``subject_id="p10000032"``; image
paths are relative to the MIMIC-CXR-JPG root: ``files/p10/p10000032/s50414267/<dicom_id>.jpg``
(the jpg files are not opened or checked here; the JPG release may live elsewhere than the
reports).

Views (from the metadata's ``ViewPosition``; ``ViewCodeSequence_CodeMeaning`` is not consulted):

* ``frontal``: PA, AP, AP AXIAL, PA LLD, AP LLD, AP RLD, PA RLD (decubitus films are frontal
  projections taken with the patient lying on one side);
* ``lateral``: LATERAL, LL, LAO, RAO, LPO, XTABLE LATERAL, SWIMMERS (oblique and swimmer's views
  are grouped with the lateral: they are not frontal, and the model only tells frontal from
  lateral);
* ``unknown``: empty / NaN and anything else.

Section extraction (:func:`extract_sections`), in the spirit of the official MIMIC-CXR
``section_parser.py`` / ``create_section_files.py`` (MIT-LCP/mimic-cxr), with documented
differences:

1. A *header* is a line that starts (after optional indentation) with a section name followed by
   a colon, e.g. ``" FINDINGS:"`` or ``"IMPRESSION: No acute process."``. The section's text is
   whatever follows the colon, on the same line and on the next lines, up to the next header or
   the end of the report. Text before the first header (``FINAL REPORT``, ...) is the preamble.
2. The name is matched case-insensitively and normalised with the official synonym table
   (``IMPRESSIONS``/``CONCLUSION``/``FINDINGS AND IMPRESSION``/``FINDINGS/IMPRESSION`` and
   frequent typos -> impression; ``FINDING``/``CHEST, TWO VIEWS``/typos -> findings; ...).
   Difference from the official parser: that one splits on *any* upper-case ``NAME:`` line and
   only accepts upper case; here only names in the synonym table (:data:`SECTION_SYNONYMS`) start a
   section, in any case (``Findings:``, ``impression:``). So an in-text all-caps label such as
   ``"LUNGS: clear"`` inside FINDINGS stays part of FINDINGS instead of truncating it.
3. Empty FINDINGS / IMPRESSION sections are dropped; when a name occurs more than once the *last*
   non-empty one is kept (as the official code does, e.g. an addended IMPRESSION).
4. Text is whitespace-normalised: line breaks and runs of spaces become single spaces; the
   de-identification placeholder ``___`` is kept as is.
5. A report with neither FINDINGS nor IMPRESSION is skipped and counted as
   ``no_findings_or_impression`` (the paper keeps only these two sections). With
   ``fallback_last_paragraph=True`` it instead gets the official parser's ``last_paragraph``: the
   last section (the whole report when it has no header) is split on blank lines and every
   paragraph but the first is kept (the first is the section's own sentence or the report title);
   a report with no headers at all keeps its whole text minus a leading ``FINAL REPORT`` line. The
   text goes into ``findings`` (such bodies are descriptive); ``impression`` stays empty.

Skipped studies are counted by reason in the returned :class:`collections.Counter`:

* ``no_report_file``: a study of the metadata has no ``sNNN.txt`` in the reports tree;
* ``unreadable``: the report could not be read, or is not valid UTF-8 (never decoded with
  replacement characters: a corrupt file is reported, not silently altered);
* ``empty_report``: the report file holds only whitespace;
* ``no_findings_or_impression``: see rule 5;
* ``not_in_split``: with ``split_csv``, a study the split file does not list;
* ``excluded_split``: with ``split_csv`` and ``splits``, a study of another split.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Collection, Iterable

import pandas as pd

from ...files import require_csv_columns
from .records import ImageRef, StudyRecord

__all__ = [
    "FRONTAL_POSITIONS",
    "LATERAL_POSITIONS",
    "METADATA_COLUMNS",
    "SECTION_SYNONYMS",
    "SPLIT_COLUMNS",
    "SPLITS",
    "extract_sections",
    "image_relpath",
    "load_mimic_reports",
    "mimic_official_splits",
    "report_relpath",
    "view_of",
]

FRONTAL_POSITIONS = frozenset({"PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD"})
LATERAL_POSITIONS = frozenset({"LATERAL", "LL", "LAO", "RAO", "LPO", "XTABLE LATERAL", "SWIMMERS"})

#: Columns of the metadata file this module needs (the official file has more).
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
#: Columns of the official split file.
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
#: Values of the official split file's ``split`` column.
SPLITS = ("train", "validate", "test")

#: Lower-cased section name -> normalised name; taken from the official
#: ``section_parser.normalize_section_names`` table (MIT-LCP/mimic-cxr), plus a few plain names.
SECTION_SYNONYMS: dict[str, str] = {
    # impression
    "impression": "impression", "impressions": "impression", "conclusion": "impression",
    "conclusions": "impression", "findings and impression": "impression",
    "findings/impression": "impression", "findings/ impression": "impression",
    "impression and findings": "impression",
    "impresson": "impression", "imprression": "impression", "imoression": "impression",
    "impressoin": "impression", "imprssion": "impression", "impresion": "impression",
    "imperssion": "impression", "mpression": "impression", "impession": "impression",
    # findings
    "findings": "findings", "finding": "findings", "chest, two views": "findings",
    "reference findings": "findings", "findins": "findings", "findindgs": "findings",
    "findgings": "findings", "findngs": "findings", "findnings": "findings", "finidngs": "findings",
    # everything else: only needed so that it *ends* the section before it
    "comparison": "comparison", "comparisons": "comparison", "reference exam": "comparison",
    "comparison exam": "comparison", "comparison film": "comparison", "comparision": "comparison",
    "comparsion": "comparison", "comparrison": "comparison", "comparisions": "comparison",
    "indication": "indication", "indications": "indication", "reason for examination": "indication",
    "reason for exam": "indication", "clinical indication": "indication", "idication": "indication",
    "examination": "examination", "exam": "examination", "type of examination": "examination",
    "technique": "technique", "procedure": "technique",
    "history": "history", "clinical history": "history", "clinical information": "history",
    "patient history": "history", "pfi": "history",
    "notification": "notification", "recommendation(s)": "recommendations",
    "recommendations": "recommendations", "recommendation": "recommendations",
    "addendum": "addendum", "date": "date", "comment": "comment", "comments": "comment",
    "wet read": "wet read", "wetread": "wet read",
}

# A header: line start, optional indentation, a name (letters, spaces, ( ) / , -), optional
# spaces, a colon, then whitespace or the end of the text. Whether the name counts is decided by
# SECTION_SYNONYMS.
_HEADER = re.compile(r"^[ \t]*([A-Za-z][A-Za-z ()/,-]*?)[ \t]*:(?=\s|$)", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_TITLE = re.compile(r"^\s*FINAL REPORT[ \t]*(\n|$)", re.IGNORECASE)
_WS = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _split_sections(text: str) -> list[tuple[str, str]]:
    """``[(normalised name, raw text), ...]`` in report order; the first is ``("preamble", ...)``."""
    sections: list[tuple[str, str]] = []
    name, start = "preamble", 0
    for m in _HEADER.finditer(text):
        norm = SECTION_SYNONYMS.get(_WS.sub(" ", m.group(1)).strip().lower())
        if norm is None:
            continue
        sections.append((name, text[start:m.start()]))
        name, start = norm, m.end()
    sections.append((name, text[start:]))
    return sections


def _last_paragraph(sections: list[tuple[str, str]]) -> str:
    """The official parser's ``last_paragraph`` (module docstring, rule 5); "" when there is none."""
    has_headers = len(sections) > 1
    body = sections[-1][1]
    if not has_headers:
        body = _TITLE.sub("", body, count=1)
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(body) if p.strip()]
    if len(paragraphs) > 1:
        return _clean(" ".join(paragraphs[1:]))
    if not has_headers and paragraphs:
        return _clean(paragraphs[0])
    return ""


def extract_sections(text: str, fallback_last_paragraph: bool = False) -> tuple[str, str]:
    """``(findings, impression)`` of one free-text report, "" for an absent section.

    Rules in the module docstring. With ``fallback_last_paragraph`` a report with neither section
    returns ``(last_paragraph, "")``.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sections = _split_sections(text)
    found = {"findings": "", "impression": ""}
    for name, body in sections:
        if name in found and body.strip():
            found[name] = _clean(body)  # the last non-empty one wins
    if not found["findings"] and not found["impression"] and fallback_last_paragraph:
        return _last_paragraph(sections), ""
    return found["findings"], found["impression"]


def view_of(view_position: object) -> str:
    """``ViewPosition`` value (str, NaN, None) -> ``"frontal" | "lateral" | "unknown"``."""
    if not isinstance(view_position, str):
        return "unknown"
    key = _clean(view_position).upper()
    if key in FRONTAL_POSITIONS:
        return "frontal"
    if key in LATERAL_POSITIONS:
        return "lateral"
    return "unknown"


def _pid(subject_id: str) -> str:
    return subject_id if subject_id.startswith("p") else f"p{subject_id}"


def _sid(study_id: str) -> str:
    return study_id if study_id.startswith("s") else f"s{study_id}"


def report_relpath(subject_id: str | int, study_id: str | int) -> str:
    """``files/p10/p10000032/s50414267.txt`` for subject 10000032 (or "p10000032"), study 50414267."""
    p, s = _pid(str(subject_id)), _sid(str(study_id))
    return f"files/{p[:3]}/{p}/{s}.txt"


def image_relpath(subject_id: str | int, study_id: str | int, dicom_id: str) -> str:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg``, relative to the MIMIC-CXR-JPG root."""
    p, s = _pid(str(subject_id)), _sid(str(study_id))
    return f"files/{p[:3]}/{p}/{s}/{dicom_id}.jpg"


def _read_csv(path: str | Path, required: Iterable[str], what: str) -> pd.DataFrame:
    """Read the ``required`` columns of a (possibly gzipped) CSV as strings, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MIMIC-CXR {what} file not found: {path}")
    required = list(required)
    require_csv_columns(path, required, f"MIMIC-CXR {what} file")
    df = pd.read_csv(path, usecols=required, dtype=str, keep_default_na=True)
    for col in ("dicom_id", "subject_id", "study_id"):
        if col in required:
            bad = df[col].isna() | (df[col].str.strip() == "")
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise ValueError(f"MIMIC-CXR {what} file {path}: empty {col} in data row {row + 1}")
            df[col] = df[col].str.strip()
    return df


def mimic_official_splits(split_csv: str | Path) -> dict[str, str]:
    """Official split per study: ``{"s50414267": "train", ...}`` (values train / validate / test).

    The file lists images; every image of a study must carry the same split, else ValueError.
    """
    df = _read_csv(split_csv, SPLIT_COLUMNS, "split")
    df["split"] = df["split"].fillna("").str.strip()
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"MIMIC-CXR split file {split_csv}: unknown split value(s) {bad}; expected {SPLITS}")
    per_study = df.drop_duplicates(["study_id", "split"])
    clash = per_study["study_id"].duplicated(keep=False)
    if clash.any():
        sid = per_study.loc[clash, "study_id"].iloc[0]
        raise ValueError(f"MIMIC-CXR split file {split_csv}: study {sid} has images in several splits "
                         f"{sorted(per_study.loc[per_study['study_id'] == sid, 'split'])}")
    return {_sid(s): sp for s, sp in zip(per_study["study_id"], per_study["split"])}


def _files_dir(reports_root: str | Path) -> Path:
    root = Path(reports_root)
    if not root.is_dir():
        raise FileNotFoundError(f"MIMIC-CXR reports root not found (or not a folder): {root}")
    if (root / "files").is_dir():
        return root / "files"
    if root.name == "files":
        return root
    raise FileNotFoundError(f"MIMIC-CXR reports root {root} has no 'files' folder "
                            f"(expected {root / 'files' / 'p10' / 'p10000032' / 's50414267.txt'}, ...)")


def _read_report(path: Path) -> str | None:
    """The report's text, or None when it cannot be read or is not valid UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def load_mimic_reports(reports_root: str | Path, metadata_csv: str | Path, split_csv: str | Path | None = None,
                       *, splits: Collection[str] | None = None,
                       fallback_last_paragraph: bool = False,
                       skipped_studies: list[tuple[str, str]] | None = None) -> tuple[list[StudyRecord], Counter]:
    """Every study of the metadata that has a usable report, as ``StudyRecord(source="mimic")``.

    Records come in the metadata's order of first appearance of each study; a record's images in
    the metadata's row order. Returns ``(records, skipped)`` where ``skipped`` counts the studies
    left out by reason (module docstring).

    ``split_csv``: the official split file; studies it does not list are skipped
    (``not_in_split``). ``splits``: with ``split_csv``, keep only these splits, e.g.
    ``("train", "validate")`` (``excluded_split``). ``fallback_last_paragraph``: see
    :func:`extract_sections`. ``skipped_studies``: a list that gets one ``(study_id, reason)`` per skipped study.

    Raises FileNotFoundError naming the path for a missing root, ``files`` folder or CSV, and
    ValueError naming the file and the missing columns for a CSV without a required column.
    """
    files = _files_dir(reports_root)
    meta = _read_csv(metadata_csv, METADATA_COLUMNS, "metadata")
    split_of: dict[str, str] | None = None
    if split_csv is not None:
        split_of = mimic_official_splits(split_csv)
        if splits is not None:
            unknown = sorted(set(splits) - set(SPLITS))
            if unknown:
                raise ValueError(f"splits: unknown value(s) {unknown}; expected a subset of {SPLITS}")
    elif splits is not None:
        raise ValueError("splits= needs split_csv (the official mimic-cxr-2.0.0-split.csv.gz)")

    rows: dict[str, list[tuple[str, object]]] = {}  # study -> [(dicom_id, ViewPosition)]; ImageRefs built on keep
    subject_of: dict[str, str] = {}
    for dicom, subj, study, pos in zip(meta["dicom_id"], meta["subject_id"], meta["study_id"],
                                       meta["ViewPosition"]):
        sid = _sid(study)
        if sid not in rows:
            rows[sid], subject_of[sid] = [], _pid(subj)
        elif subject_of[sid] != _pid(subj):
            raise ValueError(f"MIMIC-CXR metadata file {metadata_csv}: study {sid} belongs to two subjects "
                             f"({subject_of[sid]}, {_pid(subj)})")
        rows[sid].append((dicom, pos))

    records: list[StudyRecord] = []
    skipped: Counter = Counter()

    def _skip(study: str, reason: str) -> None:
        skipped[reason] += 1
        if skipped_studies is not None:
            skipped_studies.append((study, reason))

    for sid, study_rows in rows.items():
        subj = subject_of[sid]
        if split_of is not None:
            if sid not in split_of:
                _skip(sid, "not_in_split")
                continue
            if splits is not None and split_of[sid] not in splits:
                _skip(sid, "excluded_split")
                continue
        path = files.parent / report_relpath(subj, sid)  # report_relpath starts with "files/"
        if not path.is_file():
            _skip(sid, "no_report_file")
            continue
        text = _read_report(path)
        if text is None:
            _skip(sid, "unreadable")
            continue
        if not text.strip():
            _skip(sid, "empty_report")
            continue
        findings, impression = extract_sections(text, fallback_last_paragraph=fallback_last_paragraph)
        if not findings and not impression:
            _skip(sid, "no_findings_or_impression")
            continue
        refs = [ImageRef(image_id=d, view=view_of(pos), path=image_relpath(subj, sid, d)) for d, pos in study_rows]
        records.append(StudyRecord(study_id=sid, findings=findings, impression=impression, images=refs,
                                   source="mimic", subject_id=subj))
    return records, skipped
