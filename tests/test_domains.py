"""Source-domain planning from MeSH tags, target-domain planning from real label tables, and a tiny build."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from refers_lite.data.reports.records import ImageRef, StudyRecord
from refers_lite.data.synthesis.source_domain import mesh_to_requests, plan_source_items, render_image_id
from refers_lite.data.synthesis.render import FindingRequest

ALL = {"atelectasis", "cardiomegaly", "pleural_effusion", "calcified_granuloma", "calcification", "emphysema",
       "lung_opacity", "degenerative_spine", "catheter", "nodule"}


def reqs(tags, seed=0):
    return mesh_to_requests(tags, np.random.default_rng(seed), available=ALL)


def test_mesh_tags_map_to_findings_with_side_zone_severity():
    r, u = reqs(["Pulmonary Atelectasis/base/left/mild"])
    assert r == (FindingRequest("atelectasis", "left", "lower", "mild"),) and u == ()
    r, _ = reqs(["Cardiomegaly/severe"])
    assert r[0].finding == "cardiomegaly" and r[0].severity == "severe"
    r, _ = reqs(["Opacity/lung/lingula/small"])
    assert (r[0].finding, r[0].side, r[0].zone, r[0].severity) == ("lung_opacity", "left", "middle", "mild")
    assert reqs(["normal"]) == ((), ())
    r, u = reqs(["Scoliosis/mild", "Emphysema/subcutaneous", "Calcinosis/aorta", "Calcinosis/lung/hilum/right"])
    assert [q.finding for q in r] == ["calcification", "calcified_granuloma"]
    assert u == ("Scoliosis/mild", "Emphysema/subcutaneous")
    # one request per (finding, side, zone); unknown severity is mild or moderate
    r, _ = reqs(["Nodule/lung/upper lobe/right", "Nodule/lung/upper lobe/right"])
    assert len(r) == 1 and r[0].severity in ("mild", "moderate")
    # a finding not available is reported, not silently dropped
    r, u = mesh_to_requests(["Pneumothorax/left"], np.random.default_rng(0), available={"nodule"})
    assert r == () and u == ("Pneumothorax/left",)


def _record(i, views, mesh=()):
    return StudyRecord(str(i), "findings", "impression", [ImageRef(f"CXR{i}_IM-{k}", v) for k, v in enumerate(views)],
                       list(mesh))


def test_plan_source_items_keeps_views_and_shares_lesions_within_a_study():
    records = [_record(i, ["frontal", "lateral"] if i % 3 else ["frontal", "unknown", "lateral"],
                       ["Cardiomegaly/mild"] if i % 2 else ["normal"]) for i in range(10, 0, -1)]
    items, studies = plan_source_items(records, [f"text {r.study_id}" for r in records], shard_size=8)
    assert [s.study_id for s in studies] == [str(i) for i in range(1, 11)]  # sorted by id
    assert len(items) == sum(len(r.images) for r in records)
    assert [it.view for it in items[:2]] == ["frontal", "lateral"]
    by_study = {}
    for it in items:
        by_study.setdefault(it.image_id.split("_")[0], []).append(it)
    for group in by_study.values():
        assert len({(it.patient, it.lesion_seed, it.requests) for it in group}) == 1
        assert len({it.acq_seed for it in group}) == len(group)
    # 23 images, 8 per patient: a patient starts every 8th image, a study keeps its first image's patient
    assert {it.patient for it in items} == {1000, 1001, 1002}
    assert all(sum(it.patient == p for it in items) <= 8 + 2 for p in (1000, 1001, 1002))
    again, _ = plan_source_items(records[::-1], [f"text {r.study_id}" for r in records[::-1]], shard_size=8)
    assert again == items  # independent of input order
    with pytest.raises(ValueError, match="no images"):
        plan_source_items([_record(1, [])], ["t"])


def test_renders_pair_each_report_with_new_films_and_keep_render_zero():
    records = [_record(i, ["frontal", "lateral"], ["Cardiomegaly"] if i % 2 else ["normal"]) for i in range(1, 11)]
    texts = [f"text {r.study_id}" for r in records]
    one, studies1 = plan_source_items(records, texts, shard_size=8)
    three, studies3 = plan_source_items(records, texts, shard_size=8, renders=3)
    assert three[:len(one)] == one  # render 0 does not change with the number of renders
    assert len(three) == 3 * len(one) and len(studies3) == len(studies1) == 10
    assert [s.renders for s in studies3] == [3] * 10 and studies1[0].renders == 1
    assert [s.image_ids for s in studies3] == [s.image_ids for s in studies1]  # studies list render 0's ids
    n = len(one)
    for k in (1, 2):
        for a, b in zip(one, three[k * n:(k + 1) * n]):
            assert b.image_id == render_image_id(a.image_id, k) == f"{a.image_id}@r{k}"
            assert b.view == a.view and {q.finding for q in b.requests} == {q.finding for q in a.requests}
            assert b.lesion_seed != a.lesion_seed and b.acq_seed != a.acq_seed
    # other patients: the numbering continues, a patient per shard of 8 images, so a study's renders differ in it
    for j in range(n):
        assert len({three[j].patient, three[n + j].patient, three[2 * n + j].patient}) == 3
    assert {it.patient for it in three} == set(range(1000, 1000 + -(-len(three) // 8)))
    assert len({it.image_id for it in three}) == len(three)
    with pytest.raises(ValueError, match="renders"):
        plan_source_items(records, texts, renders=0)
    with pytest.raises(ValueError, match="render must be"):
        render_image_id("x", -1)


def test_nih_plan_follows_the_real_label_table():
    from refers_lite.data.synthesis.findings import FINDINGS
    from refers_lite.data.synthesis.target_domains import NIH_FINDINGS, plan_target_items

    plan = plan_target_items("nih", 2000, seed=0)
    freq = dict(zip(plan.info.classes, plan.labels.mean(0)))
    # real ChestX-ray14 prevalences: Infiltration 17.7 %, Effusion 11.9 %, Hernia 0.2 %
    assert 0.14 < freq["Infiltration"] < 0.22 and 0.09 < freq["Effusion"] < 0.15 and freq["Hernia"] < 0.01
    assert 0.45 < (plan.labels.sum(1) == 0).mean() < 0.62  # 'No Finding' is 54 % of the table
    views = {it.view for it in plan.items}
    assert views == {"pa", "ap"}
    for it, row in zip(plan.items, plan.labels):  # every positive label is rendered, and nothing else
        rendered = {q.finding for q in it.requests}
        expected = {NIH_FINDINGS[c] for c, v in zip(plan.info.classes, row) if v}
        assert rendered == {f for f in expected if f in FINDINGS}


@pytest.mark.parametrize("name", ["shenzhen", "covid_t1", "covid_t2", "vindr"])
def test_other_target_plans(name):
    from refers_lite.data.synthesis.target_domains import plan_target_items

    plan = plan_target_items(name, 300, seed=1)
    assert plan.labels.shape[0] == 300 and set(np.unique(plan.labels)) <= {0, 1}
    assert plan.labels.mean() > 0.05
    if name == "shenzhen":
        assert 0.42 < plan.labels.mean() < 0.60
    if name == "covid_t2":  # viral (incl. COVID-19) vs bacterial only
        assert all(q.finding in ("ground_glass_covid", "viral_pneumonia", "pneumonia")
                   for it in plan.items for q in it.requests)
    assert plan_target_items(name, 300, seed=1).items == plan.items
    with pytest.raises(ValueError, match="unknown target domain"):
        plan_target_items("chexpert", 10)


@pytest.mark.slow
def test_tiny_build_writes_domains_that_load(tmp_path):
    from refers_lite.data.synthesis.domain_build import build_domains
    from refers_lite.data.loading.domain_dataset import DomainImages
    from refers_lite.data.loading.image_cache import CacheCorruptError, ImageCache

    lines = []
    done = build_domains("smoke", tmp_path, sizes={"source": 3, "shenzhen": 20}, only=["source", "shenzhen"],
                         workers=1, progress=False, log=lines.append)
    assert [d["name"] for d in done] == ["source", "shenzhen"] and "radiographs" in lines[-1]
    src = pd.read_csv(tmp_path / "source" / "studies.csv")
    cache = ImageCache.open(tmp_path / "source" / "cache")
    assert len(cache) == sum(len(s.split(";")) for s in src["image_ids"])
    assert set(cache.index["study_id"].astype(str)) == set(src["study_id"].astype(str))
    ds = DomainImages(tmp_path / "shenzhen", split="train", ratio=1.0, seed=0)
    item = ds[0]
    assert item["image"].shape == (1, 256, 256) and item["labels"].shape == (1,)
    meta = json.loads((tmp_path / "shenzhen" / "domain.json").read_text())
    assert meta["images"] == 20 and sum(meta["splits"].values()) == 20
    boxes = pd.read_csv(tmp_path / "shenzhen" / "boxes.csv")
    assert ((boxes.x1 <= 256) & (boxes.x0 >= 0) & (boxes.x0 < boxes.x1)).all()
    # a second build reuses everything
    again = build_domains("smoke", tmp_path, sizes={"source": 3, "shenzhen": 20}, only=["shenzhen"], workers=1,
                          progress=False, log=lines.append)
    assert again[0]["images"] == 20 and again[0]["reused"] and "reused" in lines[-1]
    # a shard damaged in place: fine-tuning's dataset refuses it, and the build renders it again and says so
    shard = tmp_path / "shenzhen" / "cache" / "shard_00000.u8"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(data)
    with pytest.raises(CacheCorruptError, match="shard_00000.u8"):
        DomainImages(tmp_path / "shenzhen", split="train", ratio=1.0, seed=0)
    fixed = build_domains("smoke", tmp_path, sizes={"source": 3, "shenzhen": 20}, only=["shenzhen"], workers=1,
                          progress=False, log=lines.append)
    assert not fixed[0]["reused"] and fixed[0]["rendered"] == 20 and "20 rendered" in lines[-1]
    assert "reused (checksums verified)" not in lines[-2]


def test_cli_data_build(tmp_path, capsys):
    from refers_lite.cli import main

    assert main(["data", "build", "--profile", "smoke", "--out", str(tmp_path), "--only", "shenzhen",
                 "--size", "shenzhen=6", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "shenzhen" in out and "profile 'smoke': 6 radiographs" in out and "6 rendered" in out
    assert (tmp_path / "shenzhen" / "splits" / "train_1pct_seed0.txt").exists()
    assert main(["data", "build", "--profile", "smoke", "--out", str(tmp_path), "--size", "nih=ten"]) == 2
    assert "--size wants DOMAIN=N" in capsys.readouterr().err
    assert main(["data", "build", "--profile", "smoke", "--out", str(tmp_path), "--size", "chexpert=3"]) == 2
    assert "unknown domain 'chexpert'" in capsys.readouterr().err
