"""Train/validation/test splits (refers_lite.data.reports.splits)."""
import pytest

from refers_lite.data.reports.records import StudyRecord
from refers_lite.data.reports.splits import SPLITS, make_splits, read_splits, write_splits


def _ids(n):
    return [str(i) for i in range(n)]


def test_deterministic_disjoint_and_complete():
    ids = _ids(1000)
    a = make_splits(ids, seed=3)
    assert a == make_splits(list(reversed(ids)), seed=3)  # order-independent
    assert a != make_splits(ids, seed=4)
    assert sorted(s for name in SPLITS for s in a[name]) == sorted(ids)
    assert not (set(a["train"]) & set(a["validation"]) or set(a["train"]) & set(a["test"])
                or set(a["validation"]) & set(a["test"]))
    assert [len(a[n]) for n in SPLITS] == [800, 100, 100]


def test_fractions_configurable_and_checked():
    s = make_splits(_ids(200), fractions=(0.5, 0.25, 0.25))
    assert [len(s[n]) for n in SPLITS] == [100, 50, 50]
    with pytest.raises(ValueError, match="sum to 1"):
        make_splits(_ids(10), fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        make_splits(_ids(10), fractions=(1.2, -0.1, -0.1))
    with pytest.raises(ValueError, match="twice"):
        make_splits(["1", "1"])


def test_subjects_stay_in_one_split():
    recs = [StudyRecord(study_id=f"s{i}", findings="x", impression="", subject_id=f"p{i // 3}") for i in range(300)]
    s = make_splits(recs, seed=0)
    where = {sid: n for n in SPLITS for sid in s[n]}
    for r in recs:
        assert where[r.study_id] == where[f"s{int(r.subject_id[1:]) * 3}"]
    assert [len(s[n]) for n in SPLITS] == [240, 30, 30]


def test_file_round_trip(tmp_path):
    s = make_splits(_ids(50), seed=1)
    p = tmp_path / "sub" / "splits.csv"
    write_splits(s, p)
    assert p.read_text().splitlines()[0] == "study_id,split"
    assert read_splits(p) == s


@pytest.mark.parametrize("content, match", [
    ("id,fold\n1,train\n", "header"),
    ("study_id,split\n1,training\n", "line 2: unknown split"),
    ("study_id,split\n1,train\n1,test\n", "line 3: study '1' already listed"),
    ("study_id,split\n1,train,extra\n", "line 2: expected 2 columns"),
    ("study_id,split\n,train\n", "empty study_id"),
    ("", "header"),
])
def test_bad_files_name_the_file(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        read_splits(p)
    assert str(p) in str(e.value)


def test_missing_or_binary_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_splits(tmp_path / "nope.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"study_id,split\n\xff\xfe,train\n")
    with pytest.raises(ValueError, match="bin.csv"):
        read_splits(p)
