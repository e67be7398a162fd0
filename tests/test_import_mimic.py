"""`refers-lite data import --mimic`: the MIMIC-CXR fixture tree (official layouts) -> the source-domain layout ->
a short pre-training -> export -> fine-tuning."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from fixtures_real import MIMIC_REPORT, make_mimic, write_jpg
from refers_lite.data.loading.source_studies import SourceStudies
from refers_lite.data.real.importer import import_mimic


def add_studies(root, splits=("train", "train", "train", "validate")):
    """More studies (one PA film each, own subjects) in the official layout, one per entry of ``splits``: the
    fixture has one training and one validation study, and pre-training needs two of each."""
    meta = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype=str)
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz", dtype=str)
    for k, sp in enumerate(splits):
        subj, study, dicom = f"1100000{k}", f"5100000{k}", f"5e{k}577a9-b0ded155-c0de8eb9-c124d10e-82c5caab"
        folder = root / "files" / f"p{subj[:2]}" / f"p{subj}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(MIMIC_REPORT.replace("clear", "clear bilaterally" * (k + 1)))
        write_jpg(folder / f"s{study}" / f"{dicom}.jpg", 60, 50, seed=60 + k)
        meta.loc[len(meta)] = meta.iloc[0].copy()
        meta.iloc[-1, :3] = [dicom, subj, study]
        split.loc[len(split)] = [dicom, study, subj, sp]
    meta.to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    split.to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    return root


@pytest.fixture(scope="module")
def mimic(tmp_path_factory):
    root = make_mimic(tmp_path_factory.mktemp("mimic") / "mimic")
    out = tmp_path_factory.mktemp("mimic_out") / "source"
    summary = import_mimic(root, out, image_size=32, vocab_size=128, progress=False, log=None)
    return root, out, summary


def test_mimic_import_writes_findings_and_impression_with_the_official_split(mimic):
    root, out, summary = mimic
    # s50000003 has no report; s50000004's only image is not on disk
    assert summary["skipped"] == {"missing_file": 1, "no_image": 1, "no_report_file": 1}
    assert summary["studies"] == 2 and summary["images"] == 3 and summary["split_by"] == "table"
    studies = pd.read_csv(out / "studies.csv", dtype=str, keep_default_na=False).set_index("study_id")
    assert studies.loc["s50414267", "split"] == "train" and studies.loc["s50000002", "split"] == "validation"
    assert studies.loc["s50414267", "patient"] == "p10000032"
    assert studies.loc["s50414267", "views"] == "frontal;lateral"
    text = studies.loc["s50414267", "text"]
    assert text.startswith("the lungs are clear .") and text.endswith("no acute cardiopulmonary process .")
    assert "examination" not in text  # only FINDINGS + IMPRESSION
    skipped = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    assert set(skipped.study_id) == {"s50000003", "s50000004"}
    assert "physionet" in json.loads((out / "domain.json").read_text())["attribution"].lower()
    assert len(SourceStudies(out, "train")) == 1 and len(SourceStudies(out, "validation")) == 1


def test_cli_import_mimic(mimic, tmp_path, capsys):
    from refers_lite import cli
    root, _, _ = mimic
    assert cli.main(["data", "import", "--mimic", str(root), "--out", str(tmp_path / "m"), "--image-size", "32",
                     "--vocab-size", "128", "--no-progress"]) == 0
    assert "2 studies, 3 images" in capsys.readouterr().out
    assert cli.main(["data", "import", "--mimic", str(root), "--labelled", "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_mimic_fixture_pretrains_exports_and_finetunes(mimic, tmp_path):
    from refers_lite.config import get_config
    from refers_lite.data.real.example_data import write_example_folder
    from refers_lite.data.real.importer import import_labelled
    from refers_lite.training.checkpoint import export_image_encoder
    from refers_lite.training.finetune import finetune, get_finetune_config
    from refers_lite.training.pretrain import pretrain

    root = add_studies(make_mimic(tmp_path / "mimic"))
    out = tmp_path / "source"
    summary = import_mimic(root, out, image_size=32, vocab_size=128, progress=False, log=None)
    assert summary["splits"] == {"train": 4, "validation": 2, "test": 0}
    cfg = get_config("smoke", ["data.source=source", f"data.root={out}", "train.max_steps=3", "train.batch_size=2"])
    res = pretrain(cfg, tmp_path / "pre", progress=False)
    assert res.step == 3
    encoder = export_image_encoder(res.last_checkpoint, tmp_path / "encoder.pt")
    labelled = write_example_folder(tmp_path / "lab", n_studies=16, size=40)
    import_labelled(labelled, labelled / "labels.csv", tmp_path / "own", image_size=32, progress=False, log=None)
    ft = finetune(encoder, tmp_path / "own", 1.0, 0, tmp_path / "ft", cfg=get_finetune_config("smoke", {"max_steps": 3}),
                  progress=False)
    assert len(ft.test_auc) == 3
