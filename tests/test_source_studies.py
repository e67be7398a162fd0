"""The built source domain as pre-training studies (refers_lite.data.loading.source_studies)."""
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from refers_lite.data.loading.image_cache import ImageCache
from refers_lite.data.reports.report_tokenizer import BOS, EOS, ReportTokenizer
from refers_lite.data.loading.source_studies import SourceStudies, write_placeholder_source
from refers_lite.data.reports.splits import SPLITS
from refers_lite.data.loading.studies import MultiViewStudies

SIZE = 64
N = 8


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_placeholder_source(tmp_path_factory.mktemp("ph") / "source", n_studies=N, image_size=SIZE)


@pytest.fixture
def copy(source, tmp_path):
    """A private copy of the placeholder source that a test may damage."""
    return shutil.copytree(source, tmp_path / "source")


def _edit_studies(root, edit):
    path = root / "studies.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = edit(df)
    df.to_csv(path, index=False)
    return path


def test_items_are_the_cached_pixels_and_the_tokenised_report(source):
    ds = SourceStudies(source, split=None)
    studies = pd.read_csv(source / "studies.csv", dtype=str, keep_default_na=False)
    cache = ImageCache.open(source / "cache")
    item_of = dict(zip(cache.index["image_id"], cache.index["item"]))
    tok = ReportTokenizer.load(source / "report_tokenizer.json")
    assert len(ds) == N and ds.study_ids == studies["study_id"].tolist() == [str(k + 1) for k in range(N)]
    assert ds.image_size == SIZE and ds.n_images == sum(len(s.split(";")) for s in studies["image_ids"])
    for i, row in studies.iterrows():
        item = ds[i]
        assert set(item) == {"images", "report_ids", "text", "study_id"}
        ids = row["image_ids"].split(";")
        images = item["images"]
        assert images.dtype == torch.uint8 and images.shape == (len(ids), 1, SIZE, SIZE)
        np.testing.assert_array_equal(images[:, 0].numpy(), np.stack([cache.image(item_of[j]) for j in ids]))
        assert item["text"] == row["text"] and item["study_id"] == row["study_id"]
        assert item["report_ids"] == tok.encode(row["text"], 128)
        assert item["report_ids"][0] == BOS and item["report_ids"][-1] == EOS
    assert 1 <= min(len(ds[i]["images"]) for i in range(N)) and max(len(ds[i]["images"]) for i in range(N)) <= 3
    assert ds[-1]["study_id"] == ds[N - 1]["study_id"]
    with pytest.raises(IndexError):
        ds[N]


def test_images_are_a_copy_not_a_view_of_the_memory_map(source):
    ds = SourceStudies(source, split=None)
    a = ds[0]["images"]
    assert a.numpy().flags.writeable and not isinstance(a.numpy().base, np.memmap)
    before = a.clone()
    a.fill_(7)  # writing to the item must not reach the cache (it would fail on a read-only map anyway)
    assert torch.equal(ds[0]["images"], before)


def test_splits_partition_the_studies(source):
    studies = pd.read_csv(source / "studies.csv", dtype=str)
    parts = {s: SourceStudies(source, split=s) for s in SPLITS}
    assert set(studies["split"]) <= set(SPLITS)
    for s, ds in parts.items():
        assert ds.study_ids == studies.loc[studies["split"] == s, "study_id"].tolist()
        assert repr(ds).startswith(f"SourceStudies({s}: {len(ds):,} studies")
    assert sum(len(d) for d in parts.values()) == N and len(parts["train"]) >= N // 2
    assert "all: 8 studies" in repr(SourceStudies(source, split=None))


def test_report_ids_are_cut_to_max_report_len(source):
    ds = SourceStudies(source, split=None, max_report_len=6)
    for i in range(N):
        ids = ds[i]["report_ids"]
        assert len(ids) <= 6 and ids[0] == BOS and ids[-1] == EOS


def test_pickles_without_pixels_and_loads_in_workers(source):
    ds = SourceStudies(source, split=None)
    ds[0]  # opens a memory map
    blob = pickle.dumps(ds)
    assert len(blob) < ds.n_images * SIZE * SIZE  # no pixels travel to the workers
    clone = pickle.loads(blob)
    assert clone.cache._maps == {}
    for i in range(N):
        a, b = ds[i], clone[i]
        assert torch.equal(a["images"], b["images"]) and a["report_ids"] == b["report_ids"]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, collate_fn=list)
    got = [it["study_id"] for batch in loader for it in batch]
    assert got == ds.study_ids


def test_feeds_multi_view_studies_as_uint8(source):
    views = MultiViewStudies(SourceStudies(source, split=None), num_views=2)
    item = views[0]
    assert item["images"].shape == (2, 1, SIZE, SIZE) and item["images"].dtype == torch.uint8


def test_tokenizer_is_found_next_to_the_data_or_in_iu_xray(copy, tmp_path):
    tok = ReportTokenizer.load(copy / "report_tokenizer.json")
    assert SourceStudies(copy, report_tokenizer=tok).study_ids == SourceStudies(copy).study_ids
    assert SourceStudies(copy, report_tokenizer=str(copy / "report_tokenizer.json"))[0]["report_ids"] == \
        SourceStudies(copy)[0]["report_ids"]
    # the repository's layout: data/synthetic/source next to data/iu_xray
    root = shutil.move(copy, tmp_path / "data" / "synthetic" / "source")
    (tmp_path / "data" / "iu_xray").mkdir(parents=True)
    shutil.move(root / "report_tokenizer.json", tmp_path / "data" / "iu_xray" / "report_tokenizer.json")
    assert len(SourceStudies(root)) > 0
    (tmp_path / "data" / "iu_xray" / "report_tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError) as e:
        SourceStudies(root)
    msg = str(e.value)
    assert str(root / "report_tokenizer.json") in msg and str(tmp_path / "data" / "iu_xray") in msg
    assert "refers-lite data reports" in msg
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        SourceStudies(root, report_tokenizer=tmp_path / "nowhere.json")


def test_unknown_split_argument(source):
    with pytest.raises(ValueError, match=r"unknown split 'validate'.*validation"):
        SourceStudies(source, split="validate")


def test_missing_studies_file(copy):
    (copy / "studies.csv").unlink()
    with pytest.raises(FileNotFoundError, match="studies.csv does not exist"):
        SourceStudies(copy)


def test_missing_columns_are_listed(copy):
    path = _edit_studies(copy, lambda df: df.drop(columns=["text", "views"]))
    with pytest.raises(ValueError) as e:
        SourceStudies(copy)
    assert str(path) in str(e.value) and "['views', 'text']" in str(e.value)


def test_image_id_not_in_the_cache(copy):
    def edit(df):
        df.loc[0, "image_ids"] = df.loc[0, "image_ids"].split(";")[0] + "_gone" + \
            "".join(";" + s for s in df.loc[0, "image_ids"].split(";")[1:])
        return df
    path = _edit_studies(copy, edit)
    with pytest.raises(ValueError) as e:
        SourceStudies(copy, split=None)
    assert str(path) in str(e.value) and "_gone" in str(e.value) and "not in the image cache" in str(e.value)


def test_empty_text(copy):
    path = _edit_studies(copy, lambda df: df.assign(text=["   "] + df["text"].tolist()[1:]))
    with pytest.raises(ValueError) as e:
        SourceStudies(copy, split=None)
    assert str(path) in str(e.value) and "empty report text" in str(e.value) and "'1'" in str(e.value)


def test_study_without_images(copy):
    path = _edit_studies(copy, lambda df: df.assign(image_ids=[""] + df["image_ids"].tolist()[1:]))
    with pytest.raises(ValueError) as e:
        SourceStudies(copy, split=None)
    assert str(path) in str(e.value) and "no images" in str(e.value)


def test_unknown_split_value_and_view_count_mismatch(copy):
    path = _edit_studies(copy, lambda df: df.assign(split=["valid"] + df["split"].tolist()[1:]))
    with pytest.raises(ValueError, match=r"studies.csv: study '1' has unknown split 'valid'") as e:
        SourceStudies(copy)
    assert str(path) in str(e.value)
    _edit_studies(copy, lambda df: df.assign(split="train", views=df["views"] + ";frontal"))
    with pytest.raises(ValueError, match=r"studies.csv: study '1' lists \d image\(s\) but \d view\(s\)"):
        SourceStudies(copy)


def test_placeholder_source_is_deterministic_and_complete(source, tmp_path):
    again = write_placeholder_source(tmp_path / "again", n_studies=N, image_size=SIZE)
    other = write_placeholder_source(tmp_path / "other", n_studies=N, image_size=SIZE, seed=1)
    for name in ("studies.csv", "report_tokenizer.json", "cache/manifest.json", "cache/shard_00000.u8"):
        assert (again / name).read_bytes() == (source / name).read_bytes(), name
    assert (other / "cache/shard_00000.u8").read_bytes() != (source / "cache/shard_00000.u8").read_bytes()
    df = pd.read_csv(source / "studies.csv", dtype=str, keep_default_na=False)
    assert list(df.columns) == ["study_id", "split", "patient", "image_ids", "views", "findings", "unrendered", "labels",
                          "text"]
    cache = ImageCache.open(source / "cache")
    assert {"image_id", "view", "study_id"} <= set(cache.index.columns)
    assert cache.index["study_id"].astype(str).tolist() == [s for s, ids in zip(df["study_id"], df["image_ids"])
                                                          for _ in ids.split(";")]
    pixels = cache.images(range(len(cache))).astype(np.float64)  # (K, S, S)
    assert 40 < pixels.mean() < 215 and pixels.std() > 5  # grey, not flat
    rows = pixels.mean(axis=(0, 2))  # (S,) the vertical gradient: darker at the top
    assert rows[: SIZE // 4].mean() < rows[-SIZE // 4:].mean()
    assert np.abs(np.diff(pixels, axis=2)).mean() < 4  # smooth: neighbouring pixels differ little
    with pytest.raises(ValueError, match="views_per_study"):
        write_placeholder_source(tmp_path / "bad", views_per_study=(0, 2))


def test_renders_serve_each_report_with_each_of_its_films(tmp_path):
    root = write_placeholder_source(tmp_path / "r3", n_studies=N, image_size=SIZE, renders=3)
    one = SourceStudies(root, split=None)
    three = SourceStudies(root, split=None, renders=3)
    two = SourceStudies(root, split="train", renders=2)
    assert len(one) == N and len(three) == 3 * N and three.n_studies == N and three.renders == 3
    assert three.n_images == 3 * one.n_images and "x 3 renders" in repr(three)
    cache = ImageCache.open(root / "cache")
    item_of = dict(zip(cache.index["image_id"], cache.index["item"]))
    image_ids = pd.read_csv(root / "studies.csv", dtype=str)["image_ids"].str.split(";").tolist()
    for i in range(3 * N):
        s, k = i % N, i // N
        a, b = one[s], three[i]
        assert b["study_id"] == a["study_id"] and b["report_ids"] == a["report_ids"] and b["text"] == a["text"]
        ids = [f"{j}@r{k}" if k else j for j in image_ids[s]]
        expect = np.stack([cache.image(item_of[j]) for j in ids])
        np.testing.assert_array_equal(b["images"][:, 0].numpy(), expect)
        if k:
            assert not torch.equal(b["images"], a["images"])  # another film of the same report
    items, study = three.image_items()
    assert len(items) == three.n_images and set(study.tolist()) == set(range(N))
    assert len(two) == 2 * two.n_studies and two.structured_labels().shape[0] == two.n_studies
    assert pickle.loads(pickle.dumps(three))[N + 1]["study_id"] == three[1]["study_id"]
    with pytest.raises(ValueError, match="renders of every study asked for, but the domain holds only 3"):
        SourceStudies(root, split=None, renders=4)
    with pytest.raises(ValueError, match="holds only 1"):
        SourceStudies(write_placeholder_source(tmp_path / "r1", n_studies=4, image_size=SIZE), None, renders=2)
    with pytest.raises(ValueError, match="renders must be"):
        SourceStudies(root, None, renders=0)
