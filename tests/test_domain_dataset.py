"""A torch Dataset over a built domain directory (refers_lite.data.loading.domain_dataset)."""
import functools
import json
import pickle

import numpy as np
import pytest
import torch

from refers_lite.data.loading.domain_dataset import DomainImages, read_domain
from refers_lite.data.loading.image_cache import build_cache
from refers_lite.data.loading.label_ratios import ratio_subsets, split_items, write_split_files

SIZE, N = 16, 40
CLASSES = ["a", "b", "c"]


def _pixels(i):
    return ((np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * 3 + i * 7) % 256).astype(np.uint8)


def _labels(i):
    return {"a": int(i % 2 == 0), "b": int(i % 5 == 0), "c": int(i % 7 == 3)}


def render(indices, extra=False):
    return [(_pixels(i), {"image_id": f"im{i:03d}", **_labels(i), **({"d": "x"} if extra else {})}) for i in indices]


def _domain(tmp_path, task="multilabel", classes=CLASSES, boxes="image_id,label,x0,y0,x1,y1\n"
            "im004,a,1,2,10,12\nim004,b,0,0,16,16\nim010,c,3.5,4,5,6\n", **meta):
    root = tmp_path / "dom"
    build_cache(root / "cache", N, render, fingerprint={"test": 1}, image_size=SIZE, shard_size=16, progress=False)
    ids = [f"im{i:03d}" for i in range(N)]
    y = np.array([[_labels(i)[c] for c in CLASSES] for i in range(N)])
    splits = split_items(ids, y)
    where = {k: i for i, k in enumerate(ids)}
    write_split_files(root / "splits", splits, ratio_subsets(splits["train"], y[[where[i] for i in splits["train"]]]))
    (root / "boxes.csv").write_text(boxes)
    info = {"name": "tiny", "task": task, "classes": classes, "image_size": SIZE, "source": "test",
            "attribution": "none"} | meta
    (root / "domain.json").write_text(json.dumps(info))
    return root


@pytest.fixture
def root(tmp_path):
    return _domain(tmp_path)


def test_lengths_per_split_and_ratio(root):
    assert len(DomainImages(root, "train")) == 28
    assert len(DomainImages(root, "train", ratio=0.1, seed=1)) == 3
    assert len(DomainImages(root, "train", ratio=0.01, seed=2)) == 1
    assert len(DomainImages(root, "validation", ratio=0.01)) == 4  # ratio applies to train only
    assert len(DomainImages(root, "test")) == 8
    small, full = DomainImages(root, ratio=0.1, seed=1), DomainImages(root)
    assert set(small.image_ids) <= set(full.image_ids)
    held_out = set(DomainImages(root, "validation").image_ids) | set(DomainImages(root, "test").image_ids)
    assert not held_out & set(full.image_ids)
    assert "train 0.1 seed 1: 3 images" in repr(small)


def test_items_images_and_labels(root):
    ds = DomainImages(root, "test")
    assert ds.classes == CLASSES and ds.task == "multilabel"
    y = ds.labels_matrix()
    assert y.shape == (8, 3) and y.dtype == np.float32
    for k in range(len(ds)):
        item = ds[k]
        i = int(item["image_id"][2:])
        assert item["index"] == k and item["image_id"] == ds.image_ids[k]
        assert item["image"].shape == (1, SIZE, SIZE) and item["image"].dtype == torch.float32
        torch.testing.assert_close(item["image"][0], torch.from_numpy(_pixels(i)).float() / 255)
        expected = [_labels(i)[c] for c in CLASSES]
        assert item["labels"].dtype == torch.float32 and item["labels"].tolist() == expected
        assert y[k].tolist() == expected
    assert ds[-1]["image_id"] == ds.image_ids[-1]
    with pytest.raises(IndexError):
        ds[8]


def test_transform_batches_and_pickling(root):
    ds = DomainImages(root, "validation", transform=lambda x: 1 - x)
    assert ds[0]["image"].max() <= 1 and torch.allclose(ds[0]["image"], 1 - DomainImages(root, "validation")[0]["image"])
    batch = next(iter(torch.utils.data.DataLoader(DomainImages(root, "train"), batch_size=5)))
    assert batch["image"].shape == (5, 1, SIZE, SIZE) and batch["labels"].shape == (5, 3) and len(batch["image_id"]) == 5
    plain = DomainImages(root, "test")
    again = pickle.loads(pickle.dumps(plain))
    torch.testing.assert_close(again[3]["image"], plain[3]["image"])


def test_boxes(root):
    ds = DomainImages(root, "test")  # boxes are looked up across the whole domain
    assert ds.boxes("im004") == [{"label": "a", "x0": 1.0, "y0": 2.0, "x1": 10.0, "y1": 12.0},
                                 {"label": "b", "x0": 0.0, "y0": 0.0, "x1": 16.0, "y1": 16.0}]
    assert ds.boxes("im010") == [{"label": "c", "x0": 3.5, "y0": 4.0, "x1": 5.0, "y1": 6.0}]
    assert ds.boxes("im000") == []
    with pytest.raises(KeyError, match="im999"):
        ds.boxes("im999")


def test_header_only_boxes(tmp_path):
    ds = DomainImages(_domain(tmp_path, boxes="image_id,label,x0,y0,x1,y1\n"), "train")
    assert all(ds.boxes(i) == [] for i in ds.image_ids)


@pytest.mark.parametrize("row, match", [
    ("im004,z,1,2,3,4", "line 2: label 'z' is not one of the classes"),
    ("im004,a,1,2,30,4", r"line 2: box .* outside the 16x16 image"),
    ("im004,a,5,2,5,4", r"line 2: box .* is empty"),
    ("im004,a,1,2,x,4", "line 2: coordinates must be numbers"),
    ("im777,a,1,2,3,4", "line 2: image 'im777' is not in the image cache"),
    ("im004,a,1,2,3", "line 2: expected 6 columns"),
])
def test_bad_boxes_name_the_file_and_line(tmp_path, row, match):
    ds = DomainImages(_domain(tmp_path, boxes=f"image_id,label,x0,y0,x1,y1\n{row}\n"), "train")
    with pytest.raises(ValueError, match=match) as e:
        ds.boxes("im004")
    assert "boxes.csv" in str(e.value)


def test_read_domain_and_its_errors(tmp_path):
    root = _domain(tmp_path)
    assert read_domain(root)["classes"] == CLASSES
    (root / "domain.json").write_text(json.dumps({**read_domain(root), "classes": ["a", "b", "d"]}))
    with pytest.raises(ValueError, match=r"domain.json: class\(es\) \['d'\] have no column in the image cache"):
        read_domain(root)
    with pytest.raises(ValueError, match="domain.json: class"):
        DomainImages(root)
    (root / "domain.json").write_text(json.dumps({"name": "x", "task": "multilabel", "classes": CLASSES}))
    with pytest.raises(ValueError, match=r"domain.json: missing key\(s\) \['image_size', 'source', 'attribution'\]"):
        read_domain(root)
    with pytest.raises(FileNotFoundError, match="domain.json"):
        read_domain(tmp_path)


@pytest.mark.parametrize("task, classes, match", [
    ("regression", CLASSES, "unknown task 'regression'"),
    ("binary", ["a", "b"], "a binary task has one class"),
    ("multiclass", CLASSES, "exactly one class per image"),
    ("multilabel", ["a", "a"], "repeats"),
])
def test_task_checks(tmp_path, task, classes, match):
    root = _domain(tmp_path, task=task, classes=classes)
    with pytest.raises(ValueError, match=match):
        read_domain(root)


def test_binary_domain(tmp_path):
    ds = DomainImages(_domain(tmp_path, task="binary", classes=["b"]), "train")
    assert ds.labels_matrix().shape == (28, 1)


def test_size_mismatch_and_missing_split_files(tmp_path):
    root = _domain(tmp_path, image_size=32)
    with pytest.raises(ValueError, match="image_size 32 but the cache"):
        DomainImages(root)
    root = _domain(tmp_path)
    (root / "splits" / "train_10pct_seed1.txt").unlink()
    assert len(DomainImages(root, ratio=0.1, seed=0)) == 3
    with pytest.raises(FileNotFoundError, match=r"splits/train_10pct_seed1.txt: no such split file"):
        DomainImages(root, ratio=0.1, seed=1)
    (root / "splits" / "split.csv").unlink()
    with pytest.raises(FileNotFoundError, match="split.csv"):
        DomainImages(root, "test")
    with pytest.raises(ValueError, match="unknown split 'val'"):
        DomainImages(root, "val")


def test_ids_missing_from_the_cache(tmp_path):
    root = _domain(tmp_path)
    build_cache(root / "cache", 1, functools.partial(render, extra=True), fingerprint={"test": 2},
                image_size=SIZE, shard_size=16, progress=False)  # only im000 left
    with pytest.raises(ValueError, match=r"split.csv: [78] image id\(s\) not in the image cache"):
        DomainImages(root, "test")
