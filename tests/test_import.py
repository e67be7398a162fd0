"""`refers-lite data import` on generated folders: mixed DICOM / PNG / JPG with a reports table -> a source domain
(import, short pre-training, export, fine-tuning on an imported labelled set), skips, views, resume, changes."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from refers_lite.data.loading.image_cache import ImageCache
from refers_lite.data.loading.source_studies import SourceStudies
from refers_lite.data.real.example_data import write_example_folder
from refers_lite.data.real.importer import (DataImportError, import_labelled, import_studies, read_table,
                                            view_from_text)

EXPECTED_SKIPS = {"missing_file": 1, "unreadable_image": 1, "report_empty": 1, "report_too_short": 1, "no_image": 2}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return write_example_folder(tmp_path_factory.mktemp("own") / "in", n_studies=12, size=48)


@pytest.fixture(scope="module")
def imported(example, tmp_path_factory):
    before = _tree_digest(example)
    out = tmp_path_factory.mktemp("imp") / "source"
    summary = import_studies(example, example / "reports.csv", out, image_size=32, vocab_size=128,
                             progress=False, log=None)
    assert _tree_digest(example) == before  # nothing in the input folder was written, touched or added
    return out, summary


def test_import_counts_every_skip_and_writes_the_source_layout(imported, example):
    out, summary = imported
    assert summary["skipped"] == EXPECTED_SKIPS
    assert summary["studies"] == 8 and summary["images"] == 11
    skipped = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    assert skipped["reason"].value_counts().to_dict() == EXPECTED_SKIPS
    assert skipped.loc[skipped.reason == "unreadable_image", "detail"].str.contains("not an image").all()
    assert set(skipped.loc[skipped.reason == "no_image", "study_id"]) == {"S0008", "S0011"}
    studies = pd.read_csv(out / "studies.csv", dtype=str, keep_default_na=False)
    # splits by patient: no patient in two splits; every split holds a study (pre-training validates)
    assert studies.groupby("patient")["split"].nunique().max() == 1
    assert set(studies["split"]) == {"train", "validation", "test"}
    # FINDINGS + IMPRESSION kept, headers gone, cleaned as the IU reports are
    assert not studies["text"].str.contains("findings :").any() and studies["text"].str.contains(" . ").all()
    for s in ("train", "validation"):
        ds = SourceStudies(out, s)
        item = ds[0]
        assert str(item["images"].dtype) == "torch.uint8"
        assert item["images"].shape[1:] == (1, 32, 32)
    tok = json.loads((out / "report_tokenizer.json").read_text())
    train_words = " ".join(studies.loc[studies.split == "train", "text"]).split()
    vocab = tok["model"]["vocab"]
    assert all(w in vocab for w in train_words if len(w) > 1 and w.isalpha())
    domain = json.loads((out / "domain.json").read_text())
    assert domain["kind"] == "source" and "nothing was uploaded" in domain["attribution"]


def test_views_from_the_table_then_the_dicom_header(imported):
    out, _ = imported
    studies = pd.read_csv(out / "studies.csv", dtype=str, keep_default_na=False).set_index("study_id")
    assert studies.loc["S0003", "views"] == "frontal;lateral"  # DICOM ViewPosition PA, then LL
    assert studies.loc["S0004", "views"] == "lateral"  # DICOM ViewPosition LL
    assert studies.loc["S0005", "views"] == "frontal;lateral"  # no-suffix DICOM: PatientOrientation L\F; PNG: table
    assert studies.loc["S0001", "views"] == "frontal;lateral"  # 16-bit PNG and JPEG: the table's
    assert view_from_text("PA") == "frontal" and view_from_text("LATERAL") == "lateral"
    assert view_from_text("oblique") == "unknown" and view_from_text(" ") == ""


def test_monochrome1_and_16_bit_png_become_dense_is_bright(imported):
    out, _ = imported
    cache = ImageCache.open(out / "cache")
    idx = cache.index.set_index("image_id")
    for iid in ("images/P001/S0003_0.dcm", "images/P000/S0001_0.png"):  # MONOCHROME1 + VOI window; 16-bit PNG
        img = cache.image(int(idx.loc[iid, "item"])).astype(float)  # (S, S)
        inner = img[img.any(axis=1)][:, img.any(axis=0)]
        assert inner[-3:].mean() > inner[:3].mean() + 20  # the placeholder is brighter at the bottom
        assert int(idx.loc[iid, "ok"]) == 1


def test_rerun_reuses_resumes_and_detects_a_changed_file(example, tmp_path):
    out = tmp_path / "src"
    kw = dict(image_size=32, vocab_size=128, progress=False, log=None, shard_size=4)
    first = import_studies(example, example / "reports.csv", out, **kw)
    assert first["rendered_images"] == 12 and first["input_changes"] is None
    again = import_studies(example, example / "reports.csv", out, **kw)
    assert again["rendered_images"] == 0 and again["input_changes"] == {"added": 0, "removed": 0, "changed": 0}
    (out / "cache" / "shard_00001.u8").unlink()  # as a killed import leaves it: one shard missing
    (out / "cache" / "manifest.json").unlink()
    resumed = import_studies(example, example / "reports.csv", out, **kw)
    assert resumed["rendered_images"] == 4  # only the missing shard is read again
    assert (out / "studies.csv").read_text() == (tmp_path / "src" / "studies.csv").read_text()
    # a changed input: copy the folder, rewrite one image
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(example, copy)
    out2 = tmp_path / "src2"
    import_studies(copy, copy / "reports.csv", out2, **kw)
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(copy / "images/P000/S0000_0.png")
    changed = import_studies(copy, copy / "reports.csv", out2, **kw)
    assert changed["input_changes"] == {"added": 0, "removed": 0, "changed": 1} and changed["rendered_images"] == 12


def test_parallel_workers_write_the_same_cache(example, tmp_path):
    kw = dict(image_size=32, vocab_size=128, progress=False, log=None, shard_size=3)
    import_studies(example, example / "reports.csv", tmp_path / "one", workers=1, **kw)
    import_studies(example, example / "reports.csv", tmp_path / "two", workers=2, **kw)
    m1 = json.loads((tmp_path / "one" / "cache" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "two" / "cache" / "manifest.json").read_text())
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]


def test_table_errors_name_the_file_and_the_problem(example, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("study,file,text\n1,a.png,clear lungs today\n")
    with pytest.raises(DataImportError, match=r"bad\.csv: missing column\(s\) \['image'\]"):
        read_table(bad)
    with pytest.raises(DataImportError, match="table not found"):
        read_table(tmp_path / "absent.csv")
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"study_id": 7, "images": ["a.png", "b.png"], "text": "x"}\nnot json\n')
    with pytest.raises(DataImportError, match=r"t\.jsonl, line 2"):
        read_table(jl)
    with pytest.raises(DataImportError, match="images folder not found"):
        import_studies(tmp_path / "nowhere", example / "reports.csv", tmp_path / "o", progress=False, log=None)
    table = pd.read_csv(example / "reports.csv", dtype=str, keep_default_na=False)
    table["split"] = "holdout"
    table.to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(DataImportError, match="unknown split 'holdout'"):
        import_studies(example, tmp_path / "split.csv", tmp_path / "o", progress=False, log=None)


def test_json_lines_table_with_image_lists_and_given_splits(example, tmp_path):
    table = pd.read_csv(example / "reports.csv", dtype=str, keep_default_na=False)
    table = table[(table.report.str.len() > 20) & (table.image != "")]
    lines = []
    for k, (sid, g) in enumerate(table.groupby("study_id", sort=True)):
        lines.append(json.dumps({"study_id": sid, "images": list(g.image),
                                 "text": g.report.iloc[0], "split": ["train", "val", "test"][k % 3]}))
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    s = import_studies(example, tmp_path / "t.jsonl", tmp_path / "o", image_size=32, vocab_size=128,
                       progress=False, log=None)
    assert s["split_by"] == "table" and s["views"].get("unknown", 0) > 0  # no view column: DICOM tags, else unknown
    studies = pd.read_csv(tmp_path / "o" / "studies.csv", dtype=str)
    assert set(studies.split) == {"train", "validation", "test"}


def test_cli_import_prints_the_summary(example, tmp_path, capsys):
    from refers_lite import cli
    rc = cli.main(["data", "import", "--images", str(example), "--table", str(example / "reports.csv"),
                   "--out", str(tmp_path / "s"), "--image-size", "32", "--vocab-size", "128", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "8 studies, 11 images" in out
    assert "missing_file 1, no_image 2, report_empty 1, report_too_short 1, unreadable_image 1" in out
    assert cli.main(["data", "import", "--images", str(example), "--out", str(tmp_path / "x")]) == 2
    assert "--table" in capsys.readouterr().err


@pytest.mark.slow
def test_own_folder_end_to_end_import_pretrain_export_finetune(imported, example, tmp_path):
    """The issue's 'done when': import -> a short pre-training (smoke, 3 steps) -> export -> fine-tuning on the
    same folder's labels imported with --labelled."""
    from refers_lite.config import get_config
    from refers_lite.training.checkpoint import export_image_encoder
    from refers_lite.training.finetune import finetune, get_finetune_config
    from refers_lite.training.pretrain import pretrain

    out, _ = imported
    cfg = get_config("smoke", [f"data.source=source", f"data.root={out}", "train.max_steps=3", "model.image_size=32"])
    res = pretrain(cfg, tmp_path / "pre", progress=False)
    assert res.step == 3
    encoder = export_image_encoder(res.last_checkpoint, tmp_path / "encoder.pt")
    labelled = import_labelled(example, example / "labels.csv", tmp_path / "own", image_size=32, progress=False,
                               log=None)
    assert labelled["classes"] == ["Cardiomegaly", "Effusion", "Nodule"] and labelled["task"] == "multilabel"
    assert labelled["skipped"] == {"missing_file": 1, "unreadable_image": 1}
    ft = finetune(encoder, tmp_path / "own", 1.0, 0, tmp_path / "ft", cfg=get_finetune_config("smoke", {"max_steps": 3}),
                  progress=False)
    assert set(ft.test_auc) == {"Cardiomegaly", "Effusion", "Nodule"}


def test_labelled_table_with_class_columns_is_a_binary_domain(example, tmp_path):
    from refers_lite.data.loading.domain_dataset import DomainImages, read_domain
    labels = pd.read_csv(example / "labels.csv", dtype=str, keep_default_na=False)
    table = pd.DataFrame({"image": labels.image, "Effusion": labels.labels.str.contains("Effusion").astype(int)})
    table.loc[0, "Effusion"] = 2  # not 0/1: skipped, named
    table.to_csv(tmp_path / "eff.csv", index=False)
    s = import_labelled(example, tmp_path / "eff.csv", tmp_path / "eff", image_size=32, progress=False, log=None)
    assert s["task"] == "binary" and s["classes"] == ["Effusion"] and s["skipped"]["bad_label"] == 1
    assert read_domain(tmp_path / "eff")["name"] == "eff"
    few = tmp_path / "few.csv"
    table.iloc[:4].to_csv(few, index=False)
    with pytest.raises(DataImportError, match="leaves .*empty"):
        import_labelled(example, few, tmp_path / "few", image_size=32, progress=False, log=None)
    ds = DomainImages(tmp_path / "eff", "train")
    assert ds[0]["image"].shape == (1, 32, 32)
