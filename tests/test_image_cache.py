"""The uint8 image cache on disk (refers_lite.data.loading.image_cache)."""
import functools
import json
import pickle

import numpy as np
import pytest

from refers_lite.data.loading.image_cache import CacheCorruptError, ImageCache, build_cache

SIZE = 16
FP = {"renderer": "test", "version": 1}


def _pixels(i: int, offset: int = 0) -> np.ndarray:
    """A deterministic (SIZE, SIZE) uint8 image for item ``i``."""
    return ((np.arange(SIZE * SIZE).reshape(SIZE, SIZE) * (i + 1) + i + offset) % 256).astype(np.uint8)


def render(indices, offset=0):
    """Module level, so it pickles for workers > 1."""
    return [(_pixels(i, offset), {"image_id": f"{i:03d}", "label": i % 3, "score": i / 10, "flag": i % 2 == 0})
            for i in indices]


class Counting:
    """A renderer that records its calls and can fail once on a chosen shard."""

    def __init__(self, fail_at=None, offset=0):
        self.calls, self.fail_at, self.offset = [], fail_at, offset

    def __call__(self, indices):
        if self.fail_at is not None and indices[0] == self.fail_at:
            self.fail_at = None
            raise RuntimeError("renderer crashed")
        self.calls.append(list(indices))
        return render(indices, self.offset)


def _build(root, render_shard=render, n=12, shard_size=5, fingerprint=FP, **kw):
    return build_cache(root, n, render_shard, fingerprint=fingerprint, image_size=SIZE, shard_size=shard_size,
                       progress=False, **kw)


def _files(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if not p.name.startswith(".")}


def test_round_trip_values_metadata_and_layout(tmp_path):
    cache = _build(tmp_path / "c")
    assert sorted(_files(tmp_path / "c")) == ["index.csv", "manifest.json"] + [
        f"shard_{s:05d}.{e}" for s in range(3) for e in ("json", "u8")]
    for c in (cache, ImageCache.open(tmp_path / "c")):
        assert len(c) == 12 and c.image_size == SIZE and c.fingerprint == FP
        for i in range(12):
            np.testing.assert_array_equal(c.image(i), _pixels(i))
        img = c.image(7)
        assert img.shape == (SIZE, SIZE) and img.dtype == np.uint8 and not img.flags.writeable
        assert isinstance(img.base, np.memmap) or isinstance(img, np.memmap)  # a view, not a copy
        np.testing.assert_array_equal(c.image(-1), _pixels(11))
        batch = c.images([11, 0, 5, 5])
        assert batch.shape == (4, SIZE, SIZE) and batch.flags.writeable
        np.testing.assert_array_equal(batch, np.stack([_pixels(i) for i in (11, 0, 5, 5)]))
        assert list(c.index.columns) == ["item", "image_id", "label", "score", "flag"]
        assert c.index["item"].tolist() == list(range(12))
        assert c.index["image_id"].tolist() == [f"{i:03d}" for i in range(12)]  # "007" stays a string
        assert c.index["label"].tolist() == [i % 3 for i in range(12)]
        assert c.index["flag"].tolist() == [i % 2 == 0 for i in range(12)]
        assert "12 items" in repr(c) and "16x16" in repr(c) and str(tmp_path / "c") in repr(c)
        with pytest.raises(IndexError, match="12"):
            c.image(12)
        with pytest.raises(IndexError):
            c.images([0, 12])
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert [s["count"] for s in manifest["shards"]] == [5, 5, 2]
    assert manifest["n_items"] == 12 and manifest["shard_size"] == 5


def test_pickled_cache_carries_no_pixels(tmp_path):
    cache = _build(tmp_path / "c", n=40, shard_size=40)
    cache.image(0)  # opens the memory map
    blob = pickle.dumps(cache)
    assert len(blob) < 40 * SIZE * SIZE
    np.testing.assert_array_equal(pickle.loads(blob).image(39), _pixels(39))


def test_same_bytes_for_any_number_of_workers(tmp_path):
    _build(tmp_path / "one", workers=1, shard_size=3)
    two = _build(tmp_path / "two", functools.partial(render, offset=0), workers=2, shard_size=3)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    np.testing.assert_array_equal(two.images(range(12)), np.stack([_pixels(i) for i in range(12)]))


def test_unpicklable_renderer_with_workers_is_refused(tmp_path):
    with pytest.raises(TypeError, match="picklable"):
        _build(tmp_path / "c", lambda idx: render(idx), workers=2)


def test_interrupted_build_resumes_with_only_the_missing_shards(tmp_path, capsys):
    root = tmp_path / "c"
    r = Counting(fail_at=6)  # shards of 3: [0..2] [3..5] [6..8] [9..11]; the third one fails
    with pytest.raises(RuntimeError, match="crashed"):
        _build(root, r, shard_size=3)
    assert r.calls == [[0, 1, 2], [3, 4, 5]]
    assert not (root / "manifest.json").exists()
    with pytest.raises(CacheCorruptError, match="incomplete: no manifest.json"):
        ImageCache.open(root)
    r.calls.clear()
    cache = _build(root, r, shard_size=3)
    assert r.calls == [[6, 7, 8], [9, 10, 11]]
    np.testing.assert_array_equal(cache.images(range(12)), np.stack([_pixels(i) for i in range(12)]))
    assert _files(root) == _files(_build(tmp_path / "clean", shard_size=3).root)
    r.calls.clear()  # complete: a third call renders nothing and says it reused the cache
    build_cache(root, 12, r, fingerprint=FP, image_size=SIZE, shard_size=3, progress=True)
    assert r.calls == [] and "reused" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_shard_is_named_and_repaired(tmp_path, damage):
    root = tmp_path / "c"
    _build(root)
    shard = root / "shard_00001.u8"
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(data[:-7])
    elif damage == "flip":
        data[100] ^= 0xFF
        shard.write_bytes(data)
    else:
        shard.unlink()
    with pytest.raises(CacheCorruptError, match="shard_00001.u8"):
        ImageCache.open(root)
    if damage == "flip":  # same size: only the checksum sees it
        ImageCache.open(root, verify=False)
    r = Counting()
    cache = _build(root, r)
    assert r.calls == [[5, 6, 7, 8, 9]]  # only the damaged shard
    np.testing.assert_array_equal(ImageCache.open(root).images(range(12)), np.stack([_pixels(i) for i in range(12)]))
    cache.verify()


def test_verify_after_open_detects_later_damage(tmp_path):
    cache = _build(tmp_path / "c")
    cache.verify()
    shard = tmp_path / "c" / "shard_00002.u8"
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(data)
    with pytest.raises(CacheCorruptError, match="shard_00002.u8.*sha256"):
        cache.verify()


def test_unreadable_manifest_is_named(tmp_path):
    _build(tmp_path / "c")
    (tmp_path / "c" / "manifest.json").write_text("{not json")
    with pytest.raises(CacheCorruptError, match="manifest.json"):
        ImageCache.open(tmp_path / "c")
    r = Counting()
    _build(tmp_path / "c", r)  # every shard still verifies: nothing re-rendered, manifest rewritten
    assert r.calls == []
    assert len(ImageCache.open(tmp_path / "c")) == 12
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageCache.open(tmp_path / "nowhere")


def test_fingerprint_change_rebuilds_and_keeps_other_files(tmp_path):
    root = tmp_path / "c"
    _build(root, n=12)
    (root / "notes.txt").write_text("mine")
    r = Counting(offset=1)
    cache = _build(root, r, n=7, fingerprint={"renderer": "test", "version": 2})
    assert r.calls == [[0, 1, 2, 3, 4], [5, 6]]
    assert cache.fingerprint == {"renderer": "test", "version": 2} and len(cache) == 7
    np.testing.assert_array_equal(ImageCache.open(root).image(3), _pixels(3, offset=1))
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "index.csv", "manifest.json", "notes.txt", "shard_00000.json", "shard_00000.u8", "shard_00001.json",
        "shard_00001.u8"]
    r2 = Counting(offset=1)
    _build(root, r2, n=7, fingerprint={"version": 2, "renderer": "test"})  # key order does not matter
    assert r2.calls == []


def _bad_render(indices, what):
    out = render(indices)
    for j, i in enumerate(indices):
        if i == 4:
            img, meta = out[j]
            if what == "shape":
                out[j] = (img[:, :-1], meta)
            elif what == "dtype":
                out[j] = (img.astype(np.float32), meta)
            elif what == "rgb":
                out[j] = (np.stack([img] * 3, -1), meta)
            elif what == "list":
                out[j] = (img.tolist(), meta)
            elif what == "keys":
                out[j] = (img, {**meta, "extra": 1})
            elif what == "value":
                out[j] = (img, {**meta, "label": [1, 2]})
            elif what == "meta":
                out[j] = (img, "not a dict")
    return out


@pytest.mark.parametrize("what, match", [
    ("shape", r"item 4: .*\(16, 16\), got ndarray with shape \(16, 15\)"),
    ("dtype", r"item 4: .*dtype float32"),
    ("rgb", r"item 4: .*shape \(16, 16, 3\)"),
    ("list", r"item 4: .*got list"),
    ("keys", r"item 4: metadata keys"),
    ("value", r"item 4: metadata value for 'label'"),
    ("meta", r"item 4: metadata must be a dict"),
])
def test_bad_rendered_items_name_the_item(tmp_path, what, match):
    with pytest.raises(ValueError, match=match):
        _build(tmp_path / "c", functools.partial(_bad_render, what=what))
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_wrong_number_of_items_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="list of 5"):
        _build(tmp_path / "c", lambda idx: render(idx)[:-1])
    with pytest.raises(ValueError, match="n_items"):
        _build(tmp_path / "c", n=-1)
    with pytest.raises(TypeError, match="JSON"):
        _build(tmp_path / "c", fingerprint={"x": object()})


def test_metadata_keys_must_agree_across_shards(tmp_path):
    def render_keys(indices):
        return [(_pixels(i), {"a": 1} if i < 5 else {"b": 1}) for i in indices]
    with pytest.raises(ValueError, match="item 5: metadata keys"):
        _build(tmp_path / "c", render_keys)


def test_worker_error_reaches_the_caller_and_done_shards_are_kept(tmp_path):
    root = tmp_path / "c"
    with pytest.raises(ValueError, match="item 4"):
        _build(root, functools.partial(_bad_render, what="dtype"), workers=2, shard_size=4)
    assert not (root / "manifest.json").exists()
    r = Counting()
    _build(root, r, shard_size=4)
    assert [4, 5, 6, 7] in r.calls and len(r.calls) < 3  # shard 1 failed; others done in parallel are kept


def test_auto_verify_hashes_only_changed_shards_and_catches_damage_in_place(tmp_path, monkeypatch):
    """Issue 18 (#6): datasets open caches with verify="auto": a shard damaged in place (same size) is caught by
    the next open, and an unchanged cache is not read again to check it."""
    import os

    from refers_lite.data.loading import image_cache as ic
    root = tmp_path / "c"
    _build(root)  # records every shard as verified
    hashed = []
    real = ic.sha256_file
    monkeypatch.setattr(ic, "sha256_file", lambda p, *a: hashed.append(p.name) or real(p, *a))
    ImageCache.open(root, verify="auto")
    assert hashed == []  # nothing changed since the build checked them
    shard = root / "shard_00001.u8"
    data = bytearray(shard.read_bytes())
    data[3] ^= 0xFF
    shard.write_bytes(data)
    with pytest.raises(CacheCorruptError, match="shard_00001.u8.*sha256"):
        ImageCache.open(root, verify="auto")
    assert hashed == ["shard_00001.u8"]
    with pytest.raises(ValueError, match="verify must be"):
        ImageCache.open(root, verify="sometimes")
    r = Counting()
    cache = _build(root, r)  # the repair is counted, not reported as all reused
    assert r.calls == [[5, 6, 7, 8, 9]] and cache.rendered == 5
    assert _build(root).rendered == 0
    hashed.clear()
    os.utime(shard, ns=(0, 0))  # another modification time: checked once more, then remembered
    ImageCache.open(root, verify="auto")
    ImageCache.open(root, verify="auto")
    assert hashed == ["shard_00001.u8"]
