"""Readers of the real datasets (through torchxrayvision's classes) on tiny trees in their released
layouts, and prepare_real_domain's domain directories (cache, domain.json, boxes.csv, splits)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from fixtures_real import (COVID_ROWS, NIH_ABSENT, VINDR_IDS, make_covid, make_mimic, make_nih, make_shenzhen,
                           make_vindr, write_corrupt, write_png)
from refers_lite.data.loading.image_cache import ImageCache
from refers_lite.data.loading.label_ratios import read_split_files
from refers_lite.data.real.real_datasets import (COVID_T1_CLASSES, COVID_T2_CLASSES, NIH_CLASSES, SHENZHEN_CLASSES,
                                            VINDR_CLASSES, ImageReadError, RealDatasetError, open_real_dataset,
                                            prepare_real_domain, read_covid, read_mimic_images, read_nih,
                                            read_shenzhen, read_vindr)


def _labels(ds, classes):
    """{image_id: set of positive class names}."""
    return {it.image_id: {c for c, v in zip(classes, it.labels) if v} for it in ds.items}


def _nih(tmp_path, **kw):
    with pytest.warns(UserWarning, match=f"1 of 10 listed images are not on disk.*{NIH_ABSENT}"):
        return read_nih(make_nih(tmp_path / "nih", **kw))


# ---------------------------------------------------------------------------------------------- readers


def test_nih_labels_boxes_patients_views(tmp_path):
    ds = _nih(tmp_path)
    assert ds.task == "multilabel" and ds.classes == NIH_CLASSES and len(NIH_CLASSES) == 14
    assert len(ds) == 9 and ds.skipped == {"missing_file": 1}  # every view, every image; the absent one skipped
    lab = _labels(ds, NIH_CLASSES)
    assert lab["00000001_001.png"] == {"Cardiomegaly", "Emphysema"}
    assert lab["00000003_000.png"] == {"Effusion", "Infiltration", "Pleural_Thickening"}
    assert lab["00000002_000.png"] == set()  # No Finding
    assert set().union(*lab.values()) == set(NIH_CLASSES)  # the fixture has each label once at least
    by_id = {it.image_id: it for it in ds.items}
    assert by_id["00000005_001.png"].patient_id == "5" and by_id["00000003_000.png"].view == "AP"
    # boxes are given on the 1024 x 1024 originals: the same box lands on the same 256 pixels whether
    # the file is 1024 px (item 0) or a 64 px copy
    s0 = ds[0]
    assert s0.image.shape == (256, 256) and s0.image.dtype == np.uint8 and s0.placement.src_hw == (1024, 1024)
    assert s0.boxes == [("Cardiomegaly", 128.0, 64.0, 192.0, 96.0)]
    s3 = ds[[it.image_id for it in ds.items].index("00000003_000.png")]
    assert s3.placement.src_hw == (64, 64)
    assert s3.boxes == [("Infiltration", 25.0, 50.0, 100.0, 150.0)]  # "Infiltrate" in BBox_List, renamed
    np.testing.assert_array_equal(s0.labels, np.eye(14, dtype=np.int64)[NIH_CLASSES.index("Cardiomegaly")])


def test_nih_gzipped_tables_and_kaggle_folders(tmp_path):
    root = make_nih(tmp_path / "nih", gz=True)
    part = root / "images_001" / "images"
    part.parent.mkdir()
    shutil.move(str(root / "images"), str(part))  # Kaggle's copy: images_001/images/*.png, ...
    with pytest.warns(UserWarning, match="not on disk"):
        ds = read_nih(root)
    assert len(ds) == 9 and all(it.path.startswith(str(part)) for it in ds.items)
    assert ds[0].image.shape == (256, 256)


def test_vindr_labels_are_the_union_of_radiologists_and_boxes_follow_the_padding(tmp_path):
    ds = read_vindr(make_vindr(tmp_path / "vindr"))
    assert ds.classes == VINDR_CLASSES and len(VINDR_CLASSES) == 14 and len(ds) == 6
    lab = _labels(ds, VINDR_CLASSES)
    assert lab[VINDR_IDS[0]] == {"Cardiomegaly", "Aortic enlargement", "Pleural effusion"}
    assert lab[VINDR_IDS[1]] == {"Nodule/Mass", "Other lesion"}
    assert lab[VINDR_IDS[3]] == {"Pleural thickening", "Pulmonary fibrosis", "ILD"}
    assert lab[VINDR_IDS[2]] == set() and lab[VINDR_IDS[5]] == set()  # "No finding" by every radiologist
    assert all(it.patient_id is None for it in ds.items)
    s = ds[[it.image_id for it in ds.items].index(VINDR_IDS[1])]
    # the 80 x 60 DICOM is scaled by 3.2 and centred: 32 columns of padding on each side
    assert (s.placement.ox, s.placement.oy) == (32, 0) and s.image[:, :32].max() == 0 and s.image[:, 224:].max() == 0
    assert s.boxes == [("Nodule/Mass", 64.0, 64.0, 128.0, 192.0), ("Other lesion", 160.0, 128.0, 192.0, 160.0)]


def test_vindr_physionet_layout(tmp_path):
    ds = read_vindr(make_vindr(tmp_path / "vindr", physionet=True))
    assert _labels(ds, VINDR_CLASSES)[VINDR_IDS[0]] == {"Cardiomegaly", "Aortic enlargement", "Pleural effusion"}


def test_vindr_monochrome1_images_are_inverted(tmp_path):
    ds = read_vindr(make_vindr(tmp_path / "vindr"))
    # the fixture writes the same kind of picture (bright rectangle on a gradient) as MONOCHROME2 for even
    # and MONOCHROME1 for odd ids: after reading, the rectangle is bright in the first, dark in the second
    for k in (0, 1):
        s = ds[[it.image_id for it in ds.items].index(VINDR_IDS[k])]
        inner = s.image[:, 40:216]
        assert (inner.max() == 255) if k == 0 else (inner.min() == 0)


def test_shenzhen_labels_from_file_names(tmp_path):
    root = make_shenzhen(tmp_path / "sz")
    ds = read_shenzhen(root)  # the parent of ChinaSet_AllFiles works as well as the folder itself
    assert ds.task == "binary" and ds.classes == SHENZHEN_CLASSES == ("Tuberculosis",)
    assert [it.labels[0] for it in ds.items] == [0] * 5 + [1] * 5
    assert ds.items[0].image_id == "CHNCXR_0001_0" and ds[0].image.shape == (256, 256)  # stored as RGB
    assert len(read_shenzhen(root / "ChinaSet_AllFiles")) == 10
    (root / "ChinaSet_AllFiles" / "CXR_png" / "CHNCXR_0099.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"CHNCXR_0099\.png.*_0\.png \(normal\) or _1\.png"):
        read_shenzhen(root)


def test_covid_task1_and_task2(tmp_path):
    root = make_covid(tmp_path / "covid")
    t1 = read_covid(root, task=1)
    assert t1.classes == COVID_T1_CLASSES and t1.task == "binary"
    ids = {it.image_id for it in t1.items}
    assert "covid-19-lateral.jpg" not in ids and "covid-ct.nii.gz" not in ids and "todo-1.jpg" not in ids
    assert len(t1) == 9  # frontal X-rays with a known finding
    pos = {it.image_id for it in t1.items if it.labels[0]}
    assert pos == {f for _, finding, view, _, _, f in COVID_ROWS
                   if "COVID-19" in finding and view in ("PA", "AP Supine", "AP semi erect")}
    assert {it.image_id: it.patient_id for it in t1.items}["covid-19-pneumonia-2.jpg"] == "2"
    t2 = read_covid(root, task=2)
    assert t2.classes == COVID_T2_CLASSES
    lab = {it.image_id: it.labels[0] for it in t2.items}
    assert lab["streptococcus-pneumoniae-1.jpg"] == 0 and lab["klebsiella-1.png"] == 0  # bacterial
    assert lab["SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg"] == 1  # viral
    assert lab["covid-19-pneumonia-2.jpg"] == 1  # COVID-19 is a viral pneumonia
    assert "pneumocystis-1.jpg" not in lab and "normal-1.png" not in lab and "tb-1.jpg" not in lab
    assert t2.skipped["not_viral_or_bacterial"] == 3
    s = t2[0]
    assert s.image.shape == (256, 256) and s.labels.shape == (1,)
    with pytest.raises(ValueError, match="covid_t1.*covid_t2"):
        open_real_dataset("covid", root)


def test_mimic_images_of_studies_with_reports(tmp_path):
    with pytest.warns(UserWarning, match="1 of 4 listed images are not on disk"):
        ds = read_mimic_images(make_mimic(tmp_path / "mimic"))
    assert ds.classes == () and len(ds) == 3
    assert ds.skipped == {"study_no_report_file": 1, "missing_file": 1}
    assert {it.patient_id for it in ds.items} == {"p10000032", "p10000033"}
    assert [it.view for it in ds.items] == ["frontal", "lateral", "frontal"]
    assert dict(ds.items[2].extra) == {"study_id": "s50000002", "split": "validate"}
    assert ds[1].image.shape == (256, 256)


def test_readers_leave_the_global_numpy_seed_alone(tmp_path):
    root = make_shenzhen(tmp_path / "sz")
    np.random.seed(1234)
    expected = np.random.rand()
    np.random.seed(1234)
    read_shenzhen(root)  # NLMTB_Dataset calls np.random.seed(0) inside
    assert np.random.rand() == expected


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_tables_and_folders_say_what_where_and_where_from(tmp_path):
    root = make_nih(tmp_path / "nih")
    (root / "Data_Entry_2017_v2020.csv").unlink()
    with pytest.raises(RealDatasetError, match=r"Data_Entry_2017_v2020\.csv.*nihcc\.app\.box\.com"):
        read_nih(root)
    root = make_covid(tmp_path / "covid")
    (root / "metadata.csv").unlink()
    with pytest.raises(RealDatasetError, match=r"metadata\.csv.*github\.com/ieee8023/covid-chestxray-dataset"):
        read_covid(root)
    root = make_vindr(tmp_path / "vindr")
    shutil.rmtree(root / "train")
    with pytest.raises(RealDatasetError, match=r"image folder not found: .*train.*kaggle"):
        read_vindr(root)
    with pytest.raises(RealDatasetError, match=r"CXR_png.*lhncbc\.nlm\.nih\.gov"):
        read_shenzhen(tmp_path)
    with pytest.raises(RealDatasetError, match=r"mimic-cxr-2\.0\.0-metadata.*physionet\.org"):
        read_mimic_images(tmp_path)
    with pytest.raises(RealDatasetError, match="dataset root folder not found"):
        read_nih(tmp_path / "nowhere")


def test_table_without_a_needed_column_names_file_and_column(tmp_path):
    root = make_vindr(tmp_path / "vindr")
    df = pd.read_csv(root / "train.csv").drop(columns=["class_name"])
    df.to_csv(root / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"train\.csv lacks column\(s\) \['class_name'\]"):
        read_vindr(root)


def test_no_image_on_disk_is_an_error(tmp_path):
    root = make_covid(tmp_path / "covid")
    for p in (root / "images").iterdir():
        p.unlink()
    with pytest.raises(RealDatasetError, match="none of the 9 images listed is on disk"):
        read_covid(root)


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_image_stops_prepare_naming_the_file(tmp_path, kind):
    root = make_shenzhen(tmp_path / "sz")
    bad = write_corrupt(root / "ChinaSet_AllFiles" / "CXR_png" / "CHNCXR_0004_0.png", kind)
    ds = read_shenzhen(root)
    with pytest.raises(ImageReadError, match="CHNCXR_0004_0.png"):
        ds[3]
    with pytest.raises(ImageReadError, match="CHNCXR_0004_0.png") as e:
        prepare_real_domain("shenzhen", root, tmp_path / "out", progress=False)
    assert e.value.path == str(bad)
    assert not (tmp_path / "out" / "domain.json").exists()
    write_png(bad, 44, 36, seed=24)  # the file fixed: the same call now finishes
    assert prepare_real_domain("shenzhen", root, tmp_path / "out", progress=False)["n_items"] == 10


# ---------------------------------------------------------------------------------------------- domain directories


def _check_domain(out, ds, name):
    dom = json.loads((out / "domain.json").read_text())
    assert dom["name"] == name and dom["task"] == ds.task and dom["classes"] == list(ds.classes)
    assert dom["image_size"] == 256 and dom["source"] and dom["attribution"]
    cache = ImageCache.open(out / "cache")
    assert len(cache) == len(ds)
    idx = cache.index
    assert list(idx["image_id"]) == [it.image_id for it in ds.items]
    for c in ds.classes:
        assert idx[c].isin([0, 1]).all() and idx[c].dtype.kind == "i"
    np.testing.assert_array_equal(idx[list(ds.classes)].to_numpy(), ds.label_matrix())
    for i in (0, len(ds) - 1):
        np.testing.assert_array_equal(cache.image(i), ds[i].image)
    boxes = pd.read_csv(out / "boxes.csv")
    assert list(boxes.columns) == ["image_id", "label", "x0", "y0", "x1", "y1"]
    expected = [(it_id, *b) for it_id, s in ((it.image_id, ds[k]) for k, it in enumerate(ds.items)) for b in s.boxes]
    assert [(r.image_id, r.label, r.x0, r.y0, r.x1, r.y1) for r in boxes.itertuples()] == \
        [(i, lab, pytest.approx(x0, abs=0.01), pytest.approx(y0, abs=0.01), pytest.approx(x1, abs=0.01),
          pytest.approx(y1, abs=0.01)) for i, lab, x0, y0, x1, y1 in expected]
    splits, subsets = read_split_files(out / "splits")
    assert sorted(i for v in splits.values() for i in v) == sorted(it.image_id for it in ds.items)
    assert set(subsets) == {(r, s) for r in (0.01, 0.1, 1.0) for s in (0, 1, 2)}
    split_of = {i: k for k, v in splits.items() for i in v}
    patients = {}
    for it in ds.items:
        if it.patient_id is not None:
            patients.setdefault(it.patient_id, set()).add(split_of[it.image_id])
    assert all(len(s) == 1 for s in patients.values())  # no patient in two splits
    return dom, cache, boxes, splits


def test_prepare_nih_domain(tmp_path):
    root = make_nih(tmp_path / "nih")
    with pytest.warns(UserWarning, match="not on disk"):
        summary = prepare_real_domain("nih", root, tmp_path / "out", progress=False)
    with pytest.warns(UserWarning, match="not on disk"):
        ds = read_nih(root)
    _, cache, boxes, _ = _check_domain(tmp_path / "out", ds, "nih")
    assert len(boxes) == 3 and summary["n_boxes"] == 3 and summary["skipped"] == {"missing_file": 1}
    assert summary["grouped_by_patient"] and sum(summary["splits"].values()) == 9
    assert {"image_id", "patient_id", "view", "file", "orig_h", "orig_w"} <= set(cache.index.columns)
    assert cache.index["orig_h"].tolist()[:2] == [1024, 64] and cache.index["file"][0] == "images/00000001_000.png"
    # a second run reuses the cache (same fingerprint)
    before = (tmp_path / "out" / "cache" / "shard_00000.u8").stat().st_mtime_ns
    with pytest.warns(UserWarning, match="not on disk"):
        prepare_real_domain("nih", root, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "cache" / "shard_00000.u8").stat().st_mtime_ns == before


@pytest.mark.parametrize("name", ["vindr", "shenzhen", "covid_t1", "covid_t2"])
def test_prepare_other_domains(tmp_path, name):
    make = {"vindr": make_vindr, "shenzhen": make_shenzhen, "covid_t1": make_covid, "covid_t2": make_covid}[name]
    root = make(tmp_path / name)
    summary = prepare_real_domain(name, root, tmp_path / "out", progress=False)
    ds = open_real_dataset(name, root)
    _check_domain(tmp_path / "out", ds, name)
    assert summary["n_items"] == len(ds)
    if name != "vindr":
        assert summary["negative_class"] and (tmp_path / "out" / "boxes.csv").read_text() == \
            "image_id,label,x0,y0,x1,y1\n"  # header only when there are no boxes


def test_prepare_with_workers_and_limit(tmp_path):
    root = make_shenzhen(tmp_path / "sz")
    one = prepare_real_domain("shenzhen", root, tmp_path / "one", progress=False)
    two = prepare_real_domain("shenzhen", root, tmp_path / "two", workers=2, progress=False)
    assert one["n_items"] == two["n_items"] == 10
    a, b = ImageCache.open(tmp_path / "one" / "cache"), ImageCache.open(tmp_path / "two" / "cache")
    np.testing.assert_array_equal(a.images(range(10)), b.images(range(10)))
    small = prepare_real_domain("shenzhen", root, tmp_path / "small", limit=4, progress=False)
    assert small["n_items"] == 4 and len(ImageCache.open(tmp_path / "small" / "cache")) == 4
    # the limited subset is drawn over the whole table (not its first rows, all normal here) and is nested
    ds = read_shenzhen(root)
    four, six = [it.image_id for it in ds.sample(4).items], [it.image_id for it in ds.sample(6).items]
    assert list(ImageCache.open(tmp_path / "small" / "cache").index["image_id"]) == four
    assert set(four) <= set(six) and four != [it.image_id for it in ds.items[:4]]


def test_prepared_domain_reads_as_a_fine_tuning_domain(tmp_path):
    domain_dataset = pytest.importorskip("refers_lite.data.loading.domain_dataset")
    root = make_covid(tmp_path / "covid")
    prepare_real_domain("covid_t2", root, tmp_path / "out", progress=False)
    assert domain_dataset.read_domain(tmp_path / "out")["classes"] == ["Viral"]
    n = 0
    for split in ("train", "validation", "test"):
        d = domain_dataset.DomainImages(tmp_path / "out", split=split)
        n += len(d)
        assert tuple(d[0]["image"].shape[-2:]) == (256, 256)
    assert n == 6


def test_command_line(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "data_scripts" / "prepare_real.py"
    spec = importlib.util.spec_from_file_location("prepare_real", script)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    root = make_covid(tmp_path / "covid")
    assert cli.main(["covid", "--data-root", str(root), "--out", str(tmp_path / "t2"), "--task", "2",
                     "--limit", "5", "--no-progress"]) == 0
    assert json.loads((tmp_path / "t2" / "domain.json").read_text())["name"] == "covid_t2"
    assert "covid_t2: 5 images" in capsys.readouterr().out
    assert cli.main(["nih", "--data-root", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 1
    assert "NIH ChestX-ray14" in capsys.readouterr().err


def test_prepare_mimic_pretraining_images(tmp_path):
    root = make_mimic(tmp_path / "mimic")
    with pytest.warns(UserWarning, match="not on disk"):
        summary = prepare_real_domain("mimic", root, tmp_path / "out", progress=False)
    assert summary["n_items"] == 3 and summary["n_studies"] == 2
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["name"] == "mimic" and "physionet" in meta["attribution"].lower()
    idx = ImageCache.open(tmp_path / "out" / "cache").index
    assert list(idx["study_id"]) == ["s50414267", "s50414267", "s50000002"]
    assert list(idx["split"]) == ["train", "train", "validate"]
    assert not (tmp_path / "out" / "domain.json").exists() and not (tmp_path / "out" / "splits").exists()
