"""MeSH tags and free text -> structured labels (refers_lite.data.reports.structured_labels)."""
from __future__ import annotations

import io
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from refers_lite.data.reports.structured_labels import (
    LABELS,
    MeshTag,
    label_agreement,
    labels_from_mesh,
    labels_from_text,
    labels_from_texts,
    mesh_label_names,
    parse_mesh,
)


def on(vec: np.ndarray) -> set[str]:
    return {LABELS[i] for i in np.flatnonzero(vec)}


# ------------------------------------------------------------------------------ parse_mesh

def test_parse_mesh_examples() -> None:
    assert parse_mesh("Cardiomegaly/mild") == MeshTag("Cardiomegaly", severity="mild")
    assert parse_mesh("Pulmonary Atelectasis/base/left") == MeshTag(
        "Pulmonary Atelectasis", side="left", zone="base")
    assert parse_mesh("Opacity/lung/base/right/mild") == MeshTag(
        "Opacity", side="right", zone="base", severity="mild", qualifiers=("lung",))
    assert parse_mesh("Calcified Granuloma/lung/upper lobe/right") == MeshTag(
        "Calcified Granuloma", side="right", zone="upper lobe", qualifiers=("lung",))
    assert parse_mesh("Lung/hilum/lymph nodes/bilateral/enlarged") == MeshTag(
        "Lung", side="bilateral", zone="hilum", qualifiers=("lymph nodes", "enlarged"))
    assert parse_mesh("normal") == MeshTag("normal")


@pytest.mark.parametrize("tag", ["", "/", "///", "   ", "/mild/", "a//b", "x/" * 50, "\n"])
def test_parse_mesh_odd_inputs(tag: str) -> None:
    parsed = parse_mesh(tag)
    assert isinstance(parsed, MeshTag)
    labels_from_mesh([tag])  # no crash either


def test_parse_mesh_normalises_case_and_spaces() -> None:
    t = parse_mesh("//Subcutaneous  Emphysema//LEFT/ Mild /")
    assert t == MeshTag("Subcutaneous Emphysema", side="left", severity="mild")
    assert parse_mesh("Technical Quality of Image Unsatisfactory ").finding == (
        "Technical Quality of Image Unsatisfactory")


# ----------------------------------------------------------------------------- synonyms

@pytest.mark.parametrize(
    ("tag", "label"),
    [
        ("Opacity/lung/base/left", "airspace_opacity"),
        ("Airspace Disease/lung/lower lobe/right", "airspace_opacity"),
        ("Consolidation", "airspace_opacity"),
        ("Pneumonia", "airspace_opacity"),
        ("Infiltrate/lung/base/bilateral", "airspace_opacity"),
        ("Calcified Granuloma/lung/upper lobe/right", "granuloma"),
        ("Granulomatous Disease", "granuloma"),
        ("Pulmonary Disease, Chronic Obstructive", "emphysema"),
        ("Pulmonary Congestion/mild", "edema"),
        ("Cicatrix/lung/base/left", "fibrosis"),
        ("Catheters, Indwelling/right", "support_device"),
        ("Implanted Medical Device/left", "support_device"),
        ("Fractures, Bone/ribs/left/healed", "fracture"),
        ("Hernia, Hiatal", "hernia"),
        ("Cardiac Shadow/enlarged/mild", "cardiomegaly"),
        ("Thickening/pleura/apex/bilateral", "pleural_thickening"),
        ("pleural effusion/RIGHT/small", "pleural_effusion"),
    ],
)
def test_synonym_merging(tag: str, label: str) -> None:
    assert on(labels_from_mesh([tag])) == {label}


def test_unmapped_and_conditional_heads() -> None:
    assert mesh_label_names("Subcutaneous Emphysema") == ()
    assert mesh_label_names("Thickening/bronchovascular") == ()
    assert mesh_label_names("Cardiac Shadow/borderline") == ()
    assert set(mesh_label_names("Hydropneumothorax/right")) == {"pleural_effusion", "pneumothorax"}


def test_normal_logic() -> None:
    assert on(labels_from_mesh(["normal"])) == {"normal"}
    assert on(labels_from_mesh([])) == {"normal"}
    assert on(labels_from_mesh(["Aorta/tortuous", "Spine/degenerative"])) == {"normal"}
    assert on(labels_from_mesh(["Cardiomegaly/mild", "Opacity/lung/base/left"])) == {
        "cardiomegaly", "airspace_opacity"}
    vec = labels_from_mesh(["Cardiomegaly", "normal"])
    assert vec.shape == (len(LABELS),) and vec.dtype == np.float32
    assert on(vec) == {"cardiomegaly"}


# --------------------------------------------------------------------------------- text

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Small left pleural effusion.", {"pleural_effusion"}),
        ("No pleural effusion.", {"normal"}),
        ("Without pneumothorax.", {"normal"}),
        ("Small right apical pneumothorax.", {"pneumothorax"}),
        ("Negative for pneumothorax.", {"normal"}),
        ("No evidence of pneumonia.", {"normal"}),
        ("Patchy right lower lobe pneumonia.", {"airspace_opacity"}),
        ("Lungs are clear of infiltrate.", {"normal"}),
        ("The left basilar effusion has resolved.", {"normal"}),
        ("Interval resolution of the right lower lobe consolidation.", {"normal"}),
        ("The heart is mildly enlarged.", {"cardiomegaly"}),
        ("Heart size is normal.", {"normal"}),
        ("The heart is not enlarged.", {"normal"}),
        ("No cardiomegaly.", {"normal"}),
        ("Cardiomegaly without pulmonary edema.", {"cardiomegaly"}),
        ("Mild pulmonary edema.", {"edema"}),
        ("No edema but a small right effusion.", {"pleural_effusion"}),
        ("No pneumothorax, pleural effusion, or focal airspace consolidation.", {"normal"}),
        ("Calcified granuloma in the right upper lobe.", {"granuloma"}),
        ("Stable calcified nodule at the left apex.", {"granuloma"}),
        ("8 mm nodule in the right mid lung.", {"nodule"}),
        ("No suspicious pulmonary nodules or masses.", {"normal"}),
        ("Healed left rib fractures.", {"fracture"}),
        ("No acute fracture.", {"normal"}),
        ("Left-sided pacemaker with leads in place.", {"support_device"}),
        ("Emphysematous changes.", {"emphysema"}),
        ("Subcutaneous emphysema in the neck.", {"normal"}),
        ("Large hiatal hernia.", {"hernia"}),
        ("Bibasilar atelectasis.", {"atelectasis"}),
        ("Left base scarring.", {"fibrosis"}),
        ("", {"normal"}),
    ],
)
def test_text_labels_and_negation(text: str, expected: set[str]) -> None:
    assert on(labels_from_text(text)) == expected


def test_labels_from_texts_matches_single() -> None:
    texts = ["No effusion.", "Cardiomegaly. Right effusion.", ""]
    batch = labels_from_texts(texts)
    assert batch.shape == (3, len(LABELS))
    for row, text in zip(batch, texts):
        np.testing.assert_array_equal(row, labels_from_text(text))


def test_label_agreement_toy() -> None:
    df = label_agreement([["Cardiomegaly"], ["normal"]], ["Cardiomegaly.", "Small effusion."])
    assert df.loc["cardiomegaly", "f1"] == 1.0
    assert df.loc["pleural_effusion", "text_positive"] == 1
    assert df.loc["pleural_effusion", "precision"] == 0.0
    assert "macro" in df.index
    with pytest.raises(ValueError):
        label_agreement([["normal"]], [])


# ----------------------------------------------------------------------- real IU X-ray corpus

def _iu_reports_tgz() -> Path | None:
    try:
        import torchxrayvision as xrv
    except ImportError:  # pragma: no cover
        return None
    path = Path(xrv.__file__).parent / "data" / "NLMCXR_reports.tgz"
    return path if path.exists() else None


def _read_iu_for_test(path: Path) -> tuple[list[list[str]], list[str]]:
    """TEST-ONLY reader (the library's parser lives in refers_lite.data.reports.iu_xray).

    Returns, per report, the MeSH <major> tags and FINDINGS + IMPRESSION text.
    """
    mesh, texts = [], []
    with tarfile.open(path, "r:gz") as tf:
        for member in tf:
            if not (member.isfile() and member.name.endswith(".xml")):
                continue
            root = ET.parse(io.BytesIO(tf.extractfile(member).read())).getroot()
            sections = {a.get("Label"): (a.text or "") for a in root.iter("AbstractText")}
            mesh.append([m.text or "" for m in root.iter("major")])
            texts.append(f"{sections.get('FINDINGS', '')} {sections.get('IMPRESSION', '')}")
    return mesh, texts


@pytest.fixture(scope="module")
def iu_corpus() -> tuple[list[list[str]], list[str]]:
    path = _iu_reports_tgz()
    if path is None:
        pytest.skip("torchxrayvision's NLMCXR_reports.tgz is not available")
    return _read_iu_for_test(path)


def test_agreement_on_real_corpus(iu_corpus) -> None:
    mesh, texts = iu_corpus
    assert len(texts) == 3955
    df = label_agreement(mesh, texts)
    # Floors a few points below the values measured when the rules were written
    # (macro 0.856; cardiomegaly 0.965, pleural_effusion 0.856, atelectasis 0.908,
    #  airspace_opacity 0.960, granuloma 0.944, normal 0.962).
    assert df.loc["macro", "f1"] > 0.83
    floors = {"cardiomegaly": 0.93, "pleural_effusion": 0.82, "atelectasis": 0.87,
              "airspace_opacity": 0.93, "granuloma": 0.91, "normal": 0.94}
    for label, floor in floors.items():
        assert df.loc[label, "f1"] > floor, (label, df.loc[label].to_dict())
    assert (df.loc[list(LABELS), "support"] > 0).all()
