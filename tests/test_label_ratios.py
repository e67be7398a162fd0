"""70/10/20 splits and nested label-ratio subsets (refers_lite.data.loading.label_ratios)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refers_lite.data.loading.label_ratios import (RATIOS, SEEDS, ratio_filename, ratio_subsets, read_split_files,
                                           split_items, write_split_files)
from refers_lite.data.reports.splits import SPLITS


def _ids(n):
    return [f"img{i:04d}" for i in range(n)]


def _labels(n, freqs=(0.004, 0.01, 0.05, 0.3), seed=0):
    """(n, C) multi-hot labels with rare classes."""
    return (np.random.default_rng(seed).random((n, len(freqs))) < np.array(freqs)).astype(np.int64)


def _rows(ids, labels, subset):
    where = {k: i for i, k in enumerate(ids)}
    return labels[[where[i] for i in subset]]


def _check_partition(splits, ids):
    assert set(splits) == set(SPLITS)
    assert sorted(i for name in SPLITS for i in splits[name]) == sorted(ids)
    sets = [set(splits[name]) for name in SPLITS]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


@pytest.mark.parametrize("n, sizes", [(1000, [700, 100, 200]), (37, [26, 4, 7]), (3, [2, 0, 1])])
def test_split_sizes_disjoint_and_covering(n, sizes):
    ids = _ids(n)
    s = split_items(ids, _labels(n))
    _check_partition(s, ids)
    assert [len(s[name]) for name in SPLITS] == sizes
    assert all(s[name] == sorted(s[name]) for name in SPLITS)


def test_split_depends_on_the_set_of_ids_not_their_order():
    ids, y = _ids(300), _labels(300)
    perm = np.random.default_rng(5).permutation(300)
    a = split_items(ids, y, seed=1)
    assert a == split_items([ids[i] for i in perm], y[perm], seed=1)
    assert a != split_items(ids, y, seed=2)
    assert split_items(ids) == split_items(list(reversed(ids)))


def test_split_gives_every_split_every_class_the_counts_allow():
    n = 200
    y = np.zeros((n, 4), dtype=np.int64)
    y[[3, 50, 120], 0] = 1  # 3 positives: one per split
    y[[10, 90], 1] = 1  # 2 positives: train and test (the larger held-out split)
    y[::4, 2] = 1
    y[[7, 8, 9, 11, 60, 61], 3] = 1
    ids = _ids(n)
    for seed in SEEDS:
        s = split_items(ids, y, seed=seed)
        per_split = {name: _rows(ids, y, s[name]).sum(0) for name in SPLITS}
        for name in SPLITS:
            assert per_split[name][0] == 1 and per_split[name][3] >= 1
        assert per_split["train"][1] == 1 and per_split["test"][1] == 1
        assert abs(per_split["train"][2] - 0.7 * 50) <= 1 and abs(per_split["test"][2] - 0.2 * 50) <= 1


def test_single_column_labels_stratify_both_classes():
    y = np.ones(100, dtype=np.int64)
    y[[4, 40, 80]] = 0  # three negatives: one per split
    s = split_items(_ids(100), y)
    for name in SPLITS:
        got = _rows(_ids(100), y[:, None], s[name])[:, 0]
        assert 0 in got and 1 in got


def test_groups_never_straddle_splits():
    rng = np.random.default_rng(0)
    ids = _ids(400)
    groups = [f"p{g}" for g in np.sort(rng.integers(0, 120, size=400))]
    s = split_items(ids, _labels(400), groups=groups, seed=3)
    _check_partition(s, ids)
    split_of = {i: name for name in SPLITS for i in s[name]}
    patients = {}
    for i, g in zip(ids, groups):
        patients.setdefault(g, set()).add(split_of[i])
    assert all(len(v) == 1 for v in patients.values())
    biggest = max(groups.count(g) for g in set(groups))
    for name, f in zip(SPLITS, (0.7, 0.1, 0.2)):
        assert abs(len(s[name]) - f * 400) <= biggest
    with pytest.raises(ValueError, match="groups has 3 entries for 400 ids"):
        split_items(ids, groups=["a", "b", "c"])


def test_bad_inputs():
    with pytest.raises(ValueError, match="twice"):
        split_items(["a", "b", "a"])
    with pytest.raises(ValueError, match="shape"):
        split_items(_ids(5), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="0/1"):
        split_items(_ids(3), np.array([[0], [2], [1]]))
    with pytest.raises(ValueError, match="sum to 1"):
        split_items(_ids(5), fractions=(0.7, 0.1, 0.1))
    with pytest.raises(ValueError, match="ratios"):
        ratio_subsets(_ids(5), np.zeros(5), ratios=(0.0, 1.0))
    with pytest.raises(ValueError, match="no training ids"):
        ratio_subsets([], np.zeros((0, 2)))


def test_ratio_subsets_nested_sized_and_seeded():
    ids, y = _ids(700), _labels(700)
    subs = ratio_subsets(ids, y)
    assert sorted(subs) == sorted((r, s) for r in RATIOS for s in SEEDS)
    for seed in SEEDS:
        small, mid, full = (set(subs[(r, seed)]) for r in RATIOS)
        assert small <= mid <= full == set(ids)
        assert [len(subs[(r, seed)]) for r in RATIOS] == [7, 70, 700]
    assert len({tuple(subs[(0.1, s)]) for s in SEEDS}) == 3  # seeds differ
    perm = np.random.default_rng(1).permutation(700)
    assert subs == ratio_subsets([ids[i] for i in perm], y[perm])  # the set of ids decides


def test_ratio_subsets_within_train_and_disjoint_from_held_out():
    ids, y = _ids(500), _labels(500)
    s = split_items(ids, y)
    subs = ratio_subsets(s["train"], _rows(ids, y, s["train"]))
    held_out = set(s["validation"]) | set(s["test"])
    for sub in subs.values():
        assert set(sub) <= set(s["train"]) and not set(sub) & held_out


def test_smallest_subset_holds_every_class_it_can():
    ids, y = _ids(500), _labels(500, freqs=(0.004, 0.006, 0.01, 0.05, 0.3), seed=2)
    assert (y.sum(0) > 0).all()
    for seed in SEEDS:
        sub = ratio_subsets(ids, y, ratios=(0.01,), seeds=(seed,))[(0.01, seed)]
        assert len(sub) == 5 and (_rows(ids, y, sub).sum(0) > 0).all()
    # two items, five disjoint classes of 1, 2, 3, 10 and 184 items: the two rarest
    y = np.zeros((200, 5), dtype=np.int64)
    y[np.arange(200), np.repeat(np.arange(5), [1, 2, 3, 10, 184])] = 1
    for seed in SEEDS:
        sub = ratio_subsets(_ids(200), y, ratios=(0.01, 0.1), seeds=(seed,))
        assert _rows(_ids(200), y, sub[(0.01, seed)]).sum(0).tolist() == [1, 1, 0, 0, 0]
        assert (_rows(_ids(200), y, sub[(0.1, seed)]).sum(0) > 0).all()


def test_binary_subsets_hold_the_negative_class():
    y = np.ones(300, dtype=np.int64)
    y[17] = 0  # one negative among 300
    for seed in SEEDS:
        sub = ratio_subsets(_ids(300), y, ratios=(0.01,), seeds=(seed,))[(0.01, seed)]
        assert len(sub) == 3 and "img0017" in sub


@settings(max_examples=30, deadline=None, derandomize=True)
@given(n=st.integers(1, 120), n_classes=st.integers(1, 4), seed=st.integers(0, 3), data=st.data())
def test_properties(n, n_classes, seed, data):
    y = np.array(data.draw(st.lists(st.lists(st.integers(0, 1), min_size=n_classes, max_size=n_classes),
                                    min_size=n, max_size=n)), dtype=np.int64).reshape(n, n_classes)
    ids = _ids(n)
    s = split_items(ids, y, seed=seed)
    _check_partition(s, ids)
    assert len(s["validation"]) == round(0.1 * n) and len(s["test"]) == round(0.2 * n)
    if not s["train"]:
        return
    yt = _rows(ids, y, s["train"])
    subs = ratio_subsets(s["train"], yt, seeds=(seed,))
    full = yt if n_classes > 1 else np.concatenate([yt, 1 - yt], 1)
    n_present = int((full.sum(0) > 0).sum())
    previous: set = set()
    for r in RATIOS:
        sub = subs[(r, seed)]
        assert len(sub) == max(1, round(r * len(s["train"])))
        assert previous <= set(sub) <= set(s["train"])
        previous = set(sub)
        got = _rows(s["train"], full, sub)
        assert int((got.sum(0) > 0).sum()) >= min(len(sub), n_present)


def _write(tmp_path, n=200):
    ids, y = _ids(n), _labels(n)
    s = split_items(ids, y)
    subs = ratio_subsets(s["train"], _rows(ids, y, s["train"]))
    return s, subs, write_split_files(tmp_path / "splits", s, subs)


def test_files_round_trip(tmp_path):
    s, subs, paths = _write(tmp_path)
    names = [p.name for p in paths]
    assert names[0] == "split.csv" and "train_1pct_seed0.txt" in names and "train_100pct_seed2.txt" in names
    assert len(names) == 1 + len(RATIOS) * len(SEEDS)
    assert (tmp_path / "splits" / "split.csv").read_text().splitlines()[0] == "image_id,split"
    assert ratio_filename(0.005, 1) == "train_0.5pct_seed1.txt"
    assert read_split_files(tmp_path / "splits") == (s, subs)


def test_rewrite_with_fewer_seeds_leaves_no_stale_file(tmp_path):
    s, subs, _ = _write(tmp_path)
    write_split_files(tmp_path / "splits", s, {k: v for k, v in subs.items() if k[1] == 0})
    assert sorted(read_split_files(tmp_path / "splits")[1]) == [(r, 0) for r in RATIOS]


def test_tampered_ratio_file_is_named(tmp_path):
    s, _, _ = _write(tmp_path)
    path = tmp_path / "splits" / "train_1pct_seed0.txt"
    path.write_text(path.read_text() + s["test"][0] + "\n")
    with pytest.raises(ValueError, match=rf"train_1pct_seed0.txt: 1 id\(s\) not in the train split.*'test'"):
        read_split_files(tmp_path / "splits")


def test_broken_nesting_and_partial_full_file_are_named(tmp_path):
    s, subs, _ = _write(tmp_path)
    small = subs[(0.01, 1)]
    path = tmp_path / "splits" / "train_10pct_seed1.txt"
    path.write_text("".join(i + "\n" for i in subs[(0.1, 1)] if i != small[0]))
    with pytest.raises(ValueError, match=r"train_1pct_seed1.txt: not nested in .*train_10pct_seed1.txt"):
        read_split_files(tmp_path / "splits")
    s, subs, _ = _write(tmp_path)
    path = tmp_path / "splits" / "train_100pct_seed2.txt"
    path.write_text("".join(i + "\n" for i in subs[(1.0, 2)][:-1]))
    with pytest.raises(ValueError, match="train_100pct_seed2.txt: the 100% subset must be the whole train split"):
        read_split_files(tmp_path / "splits")


def test_bad_split_csv_and_refused_writes(tmp_path):
    with pytest.raises(FileNotFoundError, match="split.csv"):
        read_split_files(tmp_path)
    (tmp_path / "split.csv").write_text("image_id,split\na,train\na,test\n")
    with pytest.raises(ValueError, match=r"split.csv, line 3: image 'a' already listed on line 2"):
        read_split_files(tmp_path)
    (tmp_path / "split.csv").write_text("study_id,split\na,train\n")
    with pytest.raises(ValueError, match="split.csv: expected the header 'image_id,split'"):
        read_split_files(tmp_path)
    out = tmp_path / "new"
    with pytest.raises(ValueError, match="not in the train split"):
        write_split_files(out, {"train": ["a"], "validation": [], "test": ["b"]}, {(0.5, 0): ["b"]})
    with pytest.raises(ValueError, match="both 'train' and 'test'"):
        write_split_files(out, {"train": ["a"], "validation": [], "test": ["a"]}, {})
    assert not out.exists()  # nothing written on an error


def test_rewriting_the_same_splits_leaves_the_files_alone_and_a_change_replaces_them_whole(tmp_path):
    import os
    ids = [f"im{i:03d}" for i in range(40)]
    y = np.array([[i % 2] for i in range(40)])
    splits = split_items(ids, y)
    subsets = ratio_subsets(splits["train"], y[[ids.index(i) for i in splits["train"]]])
    paths = write_split_files(tmp_path, splits, subsets)
    stamps = {p: os.stat(p).st_mtime_ns for p in paths}
    inodes = {p: os.stat(p).st_ino for p in paths}
    write_split_files(tmp_path, splits, subsets)  # a re-build: identical content is not touched
    assert {p: os.stat(p).st_mtime_ns for p in paths} == stamps
    moved = dict(splits, validation=splits["validation"][1:], test=splits["test"] + splits["validation"][:1])
    write_split_files(tmp_path, moved, subsets)
    split_file = tmp_path / "split.csv"
    assert os.stat(split_file).st_ino != inodes[split_file]  # replaced by a rename, never rewritten in place
    assert read_split_files(tmp_path)[0]["test"] == sorted(moved["test"])
    assert not list(tmp_path.glob(".*.tmp"))
