"""MIMIC-CXR parsing on a tiny fixture tree in the official layouts (reports tree, gzipped
MIMIC-CXR-JPG metadata and split CSVs with the real column names)."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import pytest

from refers_lite.data.reports.mimic_cxr import (extract_sections, image_relpath, load_mimic_reports, mimic_official_splits,
                                        report_relpath, view_of)

META_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]

# Header on the next line, after a blank line (the most common MIMIC style).
R_NEXT_LINE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new onset ascites  // eval for infection
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  None.
 
 FINDINGS: 
 
 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""

# Header with its text on the same line, continuing on the next lines.
R_SAME_LINE = """                                 FINAL REPORT
 INDICATION:  Intubated patient, assess ET tube position.
 
 COMPARISON:  ___.
 
 FINDINGS:  The endotracheal tube tip is 4 cm above the carina.  Moderate
 cardiomegaly is stable.
 
 IMPRESSION:  ET tube in standard position.  Stable cardiomegaly.
 
 NOTIFICATION:  Findings discussed with Dr. ___ at 10:30 a.m. on ___.
"""

# No FINDINGS section: IMPRESSION only, de-identified spans.
R_IMPRESSION_ONLY = """                                 FINAL REPORT
 HISTORY:  ___-year-old woman with shortness of breath.
 
 TECHNIQUE:  Portable AP chest radiograph.
 
 IMPRESSION:  
 1. Interval increase in small left pleural effusion compared to ___.
 2. No pneumothorax.
"""

# Lower-case / mixed-case headers, an empty FINDINGS header, an in-text all-caps label.
R_LOWER_CASE = """FINAL REPORT
Findings:
 
Findings: LUNGS: Clear.  HEART: Normal size.
No pleural effusion.
 
impression: Normal chest.
"""

# Unlabeled body only (no section headers at all).
R_BODY_ONLY = """                                 FINAL REPORT
 CHEST RADIOGRAPH PERFORMED ON ___
 
 The lungs are clear without consolidation or effusion.  The heart size is
 normal.
"""

# Sections, but neither FINDINGS nor IMPRESSION: the body hides in a last paragraph.
R_LAST_PARAGRAPH = """                                 FINAL REPORT
 PORTABLE CHEST, ___
 
 COMPARISON:  ___ radiograph.
 
 Right PICC tip in the mid SVC.  Lungs are clear.
"""

# subject, study, report text (None: no report file; bytes: written raw), [(dicom_id, ViewPosition, split)]
STUDIES = [
    ("10000032", "50414267", R_NEXT_LINE,
     [("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", "train"),
      ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", "train")]),
    ("10000032", "53189527", R_SAME_LINE,
     [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP", "train")]),
    ("10000764", "57375967", R_IMPRESSION_ONLY,
     [("096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "PA", "validate"),
      ("b79e55c3-735ce5ac-64412506-cdc9ea79-f1af521f", "LL", "validate"),
      ("f0b0a1b4-5c53aa6c-0fbb1c4f-24c1b2f9-8c0a3d1e", "", "validate")]),
    ("11000011", "51029426", R_LOWER_CASE,
     [("3d7c1f1b-6a1e4c36-9b0f2d3f-5a0f7e41-0c9e2b11", "AP AXIAL", "test"),
      ("7e2b0e71-0d1a4b0b-8f3a9c21-4b6d2e11-9a5c3f22", "XTABLE LATERAL", "test"),
      ("9c1d2e3f-4a5b6c7d-8e9f0a1b-2c3d4e5f-6a7b8c9d", "SWIMMERS", "test")]),
    ("11000011", "52000001", R_BODY_ONLY,
     [("aa000001-00000000-00000000-00000000-00000001", "PA", "test")]),
    ("11000011", "52000002", R_LAST_PARAGRAPH,
     [("aa000002-00000000-00000000-00000000-00000002", "AP", "test")]),
    ("12000022", "53000003", None,  # report file missing
     [("bb000003-00000000-00000000-00000000-00000003", "PA", "train")]),
    ("12000022", "54000004", "FINDINGS: Heart size normal.\n".encode("utf-8") + b"\xff\xfe bad \x80 bytes\n",
     [("bb000004-00000000-00000000-00000000-00000004", "RAO", "train")]),
]


def _write_csv_gz(path: Path, columns: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows(rows)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())


@pytest.fixture
def mimic(tmp_path: Path) -> dict[str, Path]:
    """A MIMIC-CXR look-alike: reports tree, metadata and split CSVs (gzipped), as released."""
    reports = tmp_path / "mimic-cxr-reports"
    meta_rows, split_rows = [], []
    for subject, study, text, images in STUDIES:
        if text is not None:
            path = reports / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        for dicom, view, split in images:
            meta_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, "3056", "2544", "21800506",
                              "213014.531", "CHEST (PA AND LAT)", "postero-anterior", "Erect"])
            split_rows.append([dicom, study, subject, split])
    jpg = tmp_path / "mimic-cxr-jpg"
    jpg.mkdir()
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-metadata.csv.gz", META_COLUMNS, meta_rows)
    _write_csv_gz(jpg / "mimic-cxr-2.0.0-split.csv.gz", SPLIT_COLUMNS, split_rows)
    return {"reports": reports, "metadata": jpg / "mimic-cxr-2.0.0-metadata.csv.gz",
            "split": jpg / "mimic-cxr-2.0.0-split.csv.gz", "tmp": tmp_path}


def test_load_records_views_paths_and_skips(mimic):
    records, skipped = load_mimic_reports(mimic["reports"], mimic["metadata"])
    by_id = {r.study_id: r for r in records}
    assert list(by_id) == ["s50414267", "s53189527", "s57375967", "s51029426"]  # metadata order
    assert skipped == {"no_report_file": 1, "unreadable": 1, "no_findings_or_impression": 2}
    assert all(r.source == "mimic" for r in records)

    r = by_id["s50414267"]
    assert r.subject_id == "p10000032"
    assert [(i.image_id, i.view) for i in r.images] == [
        ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "frontal"),
        ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "lateral")]
    assert r.images[0].path == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    assert r.findings.startswith("There is no focal consolidation, pleural effusion or pneumothorax. Bilateral")
    assert r.findings.endswith("The cardiomediastinal silhouette is normal.")
    assert r.impression == "No acute cardiopulmonary process."
    assert r.raw_text == r.findings + " " + r.impression

    assert [i.view for i in by_id["s57375967"].images] == ["frontal", "lateral", "unknown"]
    assert [i.view for i in by_id["s51029426"].images] == ["frontal", "lateral", "lateral"]
    assert by_id["s51029426"].subject_id == "p11000011"


def test_sections_header_on_same_line(mimic):
    records, _ = load_mimic_reports(mimic["reports"], mimic["metadata"])
    r = {r.study_id: r for r in records}["s53189527"]
    assert r.findings == "The endotracheal tube tip is 4 cm above the carina. Moderate cardiomegaly is stable."
    # NOTIFICATION ends IMPRESSION; "10:30" inside it is not a header
    assert r.impression == "ET tube in standard position. Stable cardiomegaly."


def test_sections_missing_findings_and_deidentified(mimic):
    records, _ = load_mimic_reports(mimic["reports"], mimic["metadata"])
    r = {r.study_id: r for r in records}["s57375967"]
    assert r.findings == ""
    assert r.impression == ("1. Interval increase in small left pleural effusion compared to ___. "
                            "2. No pneumothorax.")
    assert r.raw_text == r.impression


def test_sections_lower_case_and_empty_header(mimic):
    records, _ = load_mimic_reports(mimic["reports"], mimic["metadata"])
    r = {r.study_id: r for r in records}["s51029426"]
    # the empty first "Findings:" is dropped; the in-text "LUNGS:" / "HEART:" labels do not split
    assert r.findings == "LUNGS: Clear. HEART: Normal size. No pleural effusion."
    assert r.impression == "Normal chest."


def test_fallback_last_paragraph(mimic):
    records, skipped = load_mimic_reports(mimic["reports"], mimic["metadata"], fallback_last_paragraph=True)
    by_id = {r.study_id: r for r in records}
    assert "no_findings_or_impression" not in skipped
    assert by_id["s52000001"].findings == ("The lungs are clear without consolidation or effusion. "
                                           "The heart size is normal.")
    assert by_id["s52000002"].findings == "Right PICC tip in the mid SVC. Lungs are clear."
    assert by_id["s52000002"].impression == ""


@pytest.mark.parametrize("text, expected", [
    ("FINDINGS: a.\nIMPRESSION: b.", ("a.", "b.")),
    (" FINDINGS:\n\n  a\n  b.\n \n IMPRESSION:\n c.\n", ("a b.", "c.")),
    ("findings: a.\nImpression: b.", ("a.", "b.")),
    ("FINDINGS AND IMPRESSION: a.", ("", "a.")),
    ("FINDINGS: a.\n\nCONCLUSION: b.", ("a.", "b.")),
    ("IMPRESSION: old.\n\nADDENDUM: x.\n\nIMPRESSION: new.", ("", "new.")),  # last non-empty wins
    ("IMPRESSION : a.", ("", "a.")),
    ("INDICATION: ___ with cough.\r\nFINDINGS: a ___ b.\r\n", ("a ___ b.", "")),
    ("COMPARISON: ___.\n\nThe lungs are clear.", ("", "")),
    ("", ("", "")),
    ("FINDINGS:\n LUNGS: Clear.\n HEART: Normal.\n IMPRESSION: ok.", ("LUNGS: Clear. HEART: Normal.", "ok.")),
    ("Comparison to ___: no change.\nIMPRESSION: ok.", ("", "ok.")),  # not a known name: no header
])
def test_extract_sections(text, expected):
    assert extract_sections(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("COMPARISON: ___.\n\nThe lungs are clear.", ("The lungs are clear.", "")),
    ("COMPARISON: ___.", ("", "")),  # one paragraph under a header: nothing to fall back on
    ("FINAL REPORT\nThe lungs are clear.", ("The lungs are clear.", "")),
    ("FINDINGS: a.", ("a.", "")),  # the fallback never replaces a found section
])
def test_extract_sections_fallback(text, expected):
    assert extract_sections(text, fallback_last_paragraph=True) == expected


def test_view_of_and_relpaths():
    assert [view_of(v) for v in ("PA", "AP", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD")] == ["frontal"] * 7
    assert [view_of(v) for v in ("LATERAL", "LL", "LAO", "RAO", "LPO", "XTABLE LATERAL", "SWIMMERS")] == \
        ["lateral"] * 7
    assert [view_of(v) for v in ("", None, float("nan"), "ANTERO-POSTERIOR", " pa ")] == \
        ["unknown"] * 4 + ["frontal"]
    assert report_relpath(10000032, 50414267) == "files/p10/p10000032/s50414267.txt"
    assert report_relpath("p10000032", "s50414267") == "files/p10/p10000032/s50414267.txt"
    assert image_relpath("10000032", "50414267", "abc") == "files/p10/p10000032/s50414267/abc.jpg"


def test_official_splits(mimic):
    splits = mimic_official_splits(mimic["split"])
    assert splits == {"s50414267": "train", "s53189527": "train", "s57375967": "validate", "s51029426": "test",
                      "s52000001": "test", "s52000002": "test", "s53000003": "train", "s54000004": "train"}


def test_load_with_split_filter(mimic):
    records, skipped = load_mimic_reports(mimic["reports"], mimic["metadata"], mimic["split"],
                                          splits=("train", "validate"))
    assert [r.study_id for r in records] == ["s50414267", "s53189527", "s57375967"]
    assert skipped == {"excluded_split": 3, "no_report_file": 1, "unreadable": 1}


def test_study_missing_from_split_file(mimic):
    partial = mimic["tmp"] / "split.csv"  # plain CSV works too
    partial.write_text("dicom_id,study_id,subject_id,split\n"
                       "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,50414267,10000032,train\n")
    records, skipped = load_mimic_reports(mimic["reports"], mimic["metadata"], partial)
    assert [r.study_id for r in records] == ["s50414267"]
    assert skipped["not_in_split"] == 7


def test_split_file_conflicting_or_bad_values(mimic):
    bad = mimic["tmp"] / "bad_split.csv"
    bad.write_text("dicom_id,study_id,subject_id,split\na,1,2,train\nb,1,2,test\n")
    with pytest.raises(ValueError, match="several splits"):
        mimic_official_splits(bad)
    bad.write_text("dicom_id,study_id,subject_id,split\na,1,2,valid\n")
    with pytest.raises(ValueError, match="valid"):
        mimic_official_splits(bad)


def test_missing_metadata_column(mimic):
    meta = mimic["tmp"] / "meta.csv.gz"
    cols = [c for c in META_COLUMNS if c != "ViewPosition"]
    _write_csv_gz(meta, cols, [["d", "10000032", "50414267"] + ["x"] * (len(cols) - 3)])
    with pytest.raises(ValueError, match=r"meta\.csv\.gz.*ViewPosition"):
        load_mimic_reports(mimic["reports"], meta)
    split = mimic["tmp"] / "split.csv.gz"
    _write_csv_gz(split, ["dicom_id", "study_id", "subject_id"], [["d", "50414267", "10000032"]])
    with pytest.raises(ValueError, match=r"split\.csv\.gz.*'split'"):
        mimic_official_splits(split)


def test_missing_paths_name_the_path(mimic):
    missing = mimic["tmp"] / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mimic_reports(missing, mimic["metadata"])
    with pytest.raises(FileNotFoundError, match="no 'files' folder"):
        load_mimic_reports(mimic["tmp"], mimic["metadata"])
    with pytest.raises(FileNotFoundError, match="no-metadata.csv.gz"):
        load_mimic_reports(mimic["reports"], mimic["tmp"] / "no-metadata.csv.gz")
    with pytest.raises(FileNotFoundError, match="no-split.csv.gz"):
        mimic_official_splits(mimic["tmp"] / "no-split.csv.gz")


def test_files_folder_as_root_and_empty_report(mimic):
    (mimic["reports"] / "files" / "p10" / "p10000032" / "s53189527.txt").write_text(" \n\n ")
    records, skipped = load_mimic_reports(mimic["reports"] / "files", mimic["metadata"])
    assert [r.study_id for r in records] == ["s50414267", "s57375967", "s51029426"]
    assert skipped["empty_report"] == 1
