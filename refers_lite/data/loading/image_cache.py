"""A uint8 image cache on disk: memory-mapped, checksummed, resumable, rendered in parallel.

:func:`build_cache` renders ``n_items`` grey-level images of ``image_size`` x ``image_size`` pixels
with a user function and stores them in contiguous shards; :class:`ImageCache` opens the result
and hands out read-only views of the pixels without loading the cache into memory.

Layout under ``root`` (every file written atomically: temp file in the same folder, fsync,
``os.replace``)::

    shard_00000.u8     raw uint8 pixels of items [0, shard_size), C-order (k, H, W)
    shard_00000.json   that shard's metadata rows, count, sha256 of the .u8 bytes, fingerprint
    ...
    index.csv          one row per item: "item" + the metadata keys (for people; not read back)
    manifest.json      format, fingerprint, n_items, image_size, shard_size, shards (sha256, count)

The manifest is written last: a folder without one is an incomplete cache. A second
:func:`build_cache` with the same fingerprint and sizes reuses a complete cache as it is,
or resumes an interrupted one, rendering only the shards that are missing or fail their sha256.
A different fingerprint deletes the old cache's files (only the ones this module writes) and
renders afresh. Each shard depends only on its indices, so the bytes are the same for any
number of workers. Builds of one ``root`` by several processes wait for each other (a POSIX lock on
``root/.build.lock``); on Windows, run one at a time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import os
import pickle
import re
import signal
import sys
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ...files import atomic_write, sha256_file

__all__ = ["CacheCorruptError", "ImageCache", "build_cache", "checked_index", "FORMAT_VERSION"]

log = logging.getLogger(__name__)


def checked_index(i, n: int, what: str) -> int:
    """Index ``i`` (an int or a 0-d integer tensor / array; negative counts from the end) of ``n`` ``what``s as
    0 <= i < n, else IndexError: the one index rule of the cache and the datasets over it."""
    i = operator.index(i)
    if not -n <= i < n:
        raise IndexError(f"{what} {i} out of range for {n}")
    return i % n

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.csv"
LOCK = ".build.lock"
VERIFIED = ".verified.json"  # shard file -> [size, mtime_ns, sha256] when its sha256 last matched (verify="auto")
_SHARD_RE = re.compile(r"^shard_(\d{5,})\.(u8|json)$")
_TMP_RE = re.compile(r"^\.(shard_\d{5,}\.(u8|json)|manifest\.json|index\.csv)\..*\.tmp$")

RenderShard = Callable[[list[int]], Sequence[tuple[np.ndarray, dict]]]


class CacheCorruptError(RuntimeError):
    """An image cache on disk is incomplete or damaged; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# small file helpers

def _shard_name(s: int, ext: str) -> str:
    return f"shard_{s:05d}.{ext}"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the file itself was fsynced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=True) + "\n").encode("utf-8")


def _normalise_fingerprint(fingerprint: dict) -> dict:
    """The fingerprint as it reads back from JSON (tuples become lists), so comparisons are exact."""
    if not isinstance(fingerprint, dict):
        raise TypeError(f"fingerprint must be a dict, got {type(fingerprint).__name__}")
    try:
        return json.loads(json.dumps(fingerprint, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"fingerprint must be JSON-serialisable: {e}") from e


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CacheCorruptError(f"{path}: unreadable ({e})") from e
    if not isinstance(obj, dict):
        raise CacheCorruptError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


@contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """An exclusive POSIX record lock on ``root/.build.lock``: held by this process only (worker processes
    forked from it do not inherit it) and released by the kernel if the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; do not run two builds of one root at once
        yield
        return
    with open(root / LOCK, "a+") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# validation of what render_shard returns

def _clean_value(item: int, key: str, value: Any) -> Any:
    if isinstance(value, np.generic):  # numpy scalars -> Python scalars
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"render_shard: item {item}: metadata value for {key!r} must be a JSON scalar "
                     f"(str, int, float, bool or None), got {type(value).__name__}: {value!r}")


def _check_rendered(indices: list[int], out: Any, image_size: int) -> tuple[np.ndarray, list[dict]]:
    """Stack and validate ``render_shard``'s output: (k, H, W) uint8 and k metadata rows with the same keys."""
    if not isinstance(out, (list, tuple)) or len(out) != len(indices):
        got = f"{type(out).__name__} of length {len(out)}" if hasattr(out, "__len__") else type(out).__name__
        raise ValueError(f"render_shard({indices[0]}..{indices[-1]}) must return a list of {len(indices)} "
                         f"(image, metadata) pairs, one per index; got {got}")
    stack = np.empty((len(indices), image_size, image_size), dtype=np.uint8)  # (k, H, W)
    rows: list[dict] = []
    keys: list[str] | None = None
    for j, (item, pair) in enumerate(zip(indices, out)):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"render_shard: item {item}: expected an (image, metadata) pair, "
                             f"got {type(pair).__name__}")
        img, meta = pair
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != (image_size, image_size):
            what = (f"{type(img).__name__} with shape {img.shape} and dtype {img.dtype}" if isinstance(img, np.ndarray)
                    else type(img).__name__)
            raise ValueError(f"render_shard: item {item}: expected a 2-D uint8 numpy array of shape "
                             f"({image_size}, {image_size}), got {what}")
        if not isinstance(meta, dict):
            raise ValueError(f"render_shard: item {item}: metadata must be a dict, got {type(meta).__name__}")
        if any(not isinstance(k, str) for k in meta):
            raise ValueError(f"render_shard: item {item}: metadata keys must be strings, got {list(meta)}")
        if "item" in meta:
            raise ValueError(f"render_shard: item {item}: the metadata key 'item' is reserved (the index column)")
        if keys is None:
            keys = list(meta)
        elif set(meta) != set(keys):
            raise ValueError(f"render_shard: item {item}: metadata keys {sorted(meta)} differ from item "
                             f"{indices[0]}'s {sorted(keys)}")
        stack[j] = img
        rows.append({k: _clean_value(item, k, meta[k]) for k in keys})
    return stack, rows


# ---------------------------------------------------------------------------------------------
# one shard: render, check, write (runs in the main process or in a worker)

def _worker_init(parent: int) -> None:
    if sys.platform.startswith("linux"):  # die with the parent (killed builds leave no orphan workers)
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)  # workers share the cores: no oversubscription


def _render_shard_to_disk(root: str, s: int, start: int, count: int, render_shard: RenderShard,
                          image_size: int, fingerprint: dict) -> tuple[int, int]:
    indices = list(range(start, start + count))
    stack, rows = _check_rendered(indices, render_shard(indices), image_size)  # (k, H, W)
    folder = Path(root)
    data = memoryview(stack).cast("B")  # the C-order bytes, no copy
    sha = hashlib.sha256(data).hexdigest()
    atomic_write(folder / _shard_name(s, "u8"), data)
    meta = {"format": FORMAT_VERSION, "shard": s, "start": start, "count": count, "image_size": image_size,
            "sha256": sha, "fingerprint": fingerprint, "rows": rows}
    atomic_write(folder / _shard_name(s, "json"), _json_bytes(meta))  # after the .u8: its presence marks a done shard
    return s, count


def _shard_is_done(root: Path, s: int, start: int, count: int, image_size: int, fingerprint: dict) -> bool:
    """True when shard ``s`` was fully written for these settings and its .u8 matches its sha256."""
    jpath, upath = root / _shard_name(s, "json"), root / _shard_name(s, "u8")
    if not jpath.is_file() or not upath.is_file():
        return False
    try:
        meta = _read_json(jpath)
    except CacheCorruptError:
        return False
    if (meta.get("format") != FORMAT_VERSION or meta.get("start") != start or meta.get("count") != count
            or meta.get("image_size") != image_size or meta.get("fingerprint") != fingerprint
            or not isinstance(meta.get("rows"), list) or len(meta["rows"]) != count):
        return False
    if upath.stat().st_size != count * image_size * image_size:
        return False  # truncated: no need to hash
    return sha256_file(upath) == meta.get("sha256")


def _owned_files(root: Path) -> list[Path]:
    """Files under ``root`` that this module writes (and only those)."""
    return [p for p in root.iterdir() if p.is_file() and (
        p.name in (MANIFEST, INDEX) or _SHARD_RE.match(p.name) or _TMP_RE.match(p.name))]


# ---------------------------------------------------------------------------------------------
# the public API

def build_cache(root, n_items: int, render_shard: RenderShard, *, fingerprint: dict, image_size: int = 256,
                shard_size: int = 256, workers: int = 1, desc: str = "images", progress: bool = True) -> "ImageCache":
    """Render (or reuse, or finish) the cache of ``n_items`` images under ``root``; return it opened.

    ``render_shard(indices: list[int]) -> list[(image, metadata)]``: one pair per index, in order; the
    image a (image_size, image_size) uint8 array, the metadata a dict of JSON scalars with the same keys
    for every item. It must be picklable (a module-level function or a ``functools.partial`` of one)
    when ``workers > 1``. Items are cut into contiguous shards ``[0, shard_size)``,
    ``[shard_size, 2 * shard_size)``, ...; each shard is rendered by one call.

    ``fingerprint``: a JSON-serialisable dict describing everything the pixels depend on (source
    files, renderer settings, version); a cache built with another fingerprint is deleted and rebuilt.
    """
    root = Path(root)
    fp = _normalise_fingerprint(fingerprint)
    for name, v in (("n_items", n_items), ("image_size", image_size), ("shard_size", shard_size), ("workers", workers)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if name == "n_items" else 1):
            raise ValueError(f"build_cache: {name} must be an integer >= {0 if name == 'n_items' else 1}, got {v!r}")
    n_items, image_size, shard_size, workers = int(n_items), int(image_size), int(shard_size), int(workers)
    if not callable(render_shard):
        raise TypeError(f"build_cache: render_shard must be callable, got {type(render_shard).__name__}")
    if workers > 1:
        try:
            pickle.dumps(render_shard)
        except Exception as e:  # lambdas, closures, local functions
            raise TypeError(f"build_cache: with workers={workers}, render_shard must be picklable (a module-level "
                            f"function or a functools.partial of one): {e}") from e

    def say(msg: str) -> None:
        log.info(msg)
        if progress:
            tqdm.write(msg)

    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root):
        manifest_path = root / MANIFEST
        if manifest_path.is_file():
            try:
                old = _read_json(manifest_path)
            except CacheCorruptError as e:
                old = None
                say(f"image cache {root}: {e}; rebuilding what does not verify")
            if old is not None:
                same = {"format": FORMAT_VERSION, "fingerprint": fp, "n_items": n_items, "image_size": image_size,
                        "shard_size": shard_size}
                differs = [k for k, v in same.items() if old.get(k) != v]
                if not differs:
                    try:
                        cache = ImageCache.open(root, verify=True)
                        say(f"image cache {root}: reused ({n_items:,} {desc}, {image_size}x{image_size}, verified)")
                        cache.rendered = 0
                        return cache
                    except CacheCorruptError as e:
                        say(f"image cache {root}: {e}; re-rendering the shards that fail")
                else:
                    say(f"image cache {root}: {', '.join(differs)} changed; deleting the old cache and rebuilding")
                    for p in _owned_files(root):
                        p.unlink(missing_ok=True)
        # from here on the folder is an incomplete cache until the new manifest lands
        manifest_path.unlink(missing_ok=True)
        (root / INDEX).unlink(missing_ok=True)
        for p in _owned_files(root):
            if _TMP_RE.match(p.name):
                p.unlink(missing_ok=True)  # left by a killed build (the lock says none is running)

        n_shards = math.ceil(n_items / shard_size)
        for p in _owned_files(root):  # shards past the end (a cache that had more items)
            m = _SHARD_RE.match(p.name)
            if m and int(m.group(1)) >= n_shards:
                p.unlink(missing_ok=True)
        spans = [(s, s * shard_size, min(shard_size, n_items - s * shard_size)) for s in range(n_shards)]
        todo = [span for span in spans if not _shard_is_done(root, *span, image_size, fp)]
        kept = n_items - sum(c for _, _, c in todo)
        if n_shards and len(todo) < n_shards:
            say(f"image cache {root}: resuming, {n_shards - len(todo)} of {n_shards} shards already done")

        bar = tqdm(total=n_items, initial=kept, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
        try:
            if workers == 1 or len(todo) <= 1:
                for s, start, count in todo:
                    _render_shard_to_disk(str(root), s, start, count, render_shard, image_size, fp)
                    bar.update(count)
            else:
                _render_parallel(root, todo, render_shard, image_size, fp, min(workers, len(todo)), bar)
        finally:
            bar.close()

        rows: list[dict] = []
        shards = []
        keys: list[str] | None = None
        for s, start, count in spans:
            meta = _read_json(root / _shard_name(s, "json"))
            if keys is None and meta["rows"]:
                keys = list(meta["rows"][0])
            if meta["rows"] and set(meta["rows"][0]) != set(keys or []):
                raise ValueError(f"render_shard: item {start}: metadata keys {sorted(meta['rows'][0])} differ from "
                                 f"item 0's {sorted(keys or [])} (shard {root / _shard_name(s, 'json')})")
            rows.extend({"item": start + j, **r} for j, r in enumerate(meta["rows"]))
            shards.append({"file": _shard_name(s, "u8"), "start": start, "count": count, "sha256": meta["sha256"]})
        index = pd.DataFrame(rows, columns=["item"] + (keys or []))
        atomic_write(root / INDEX, index.to_csv(index=False).encode("utf-8"))
        manifest = {"format": FORMAT_VERSION, "fingerprint": fp, "n_items": n_items, "image_size": image_size,
                    "shard_size": shard_size, "shards": shards}
        atomic_write(manifest_path, _json_bytes(manifest))  # last: the cache is now complete
        _fsync_dir(root)
        stamps = {}  # every shard's sha256 was just checked (kept ones) or computed from its bytes (new ones)
        for sh in shards:
            st = (root / sh["file"]).stat()
            stamps[sh["file"]] = [st.st_size, st.st_mtime_ns, sh["sha256"]]
        _write_verified(root, stamps)
        if todo:
            say(f"image cache {root}: wrote {n_items - kept:,} {desc} in {len(todo)} shard(s)")
        cache = ImageCache(root, manifest, index)
        cache.rendered = n_items - kept  # what this call rendered (0: every shard reused)
        return cache


def _render_parallel(root: Path, todo: list[tuple[int, int, int]], render_shard: RenderShard, image_size: int,
                     fp: dict, workers: int, bar) -> None:
    """Render shards in worker processes; each worker writes its own shard files."""
    ex = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(os.getpid(),))
    try:
        futures = {ex.submit(_render_shard_to_disk, str(root), s, start, count, render_shard, image_size, fp): s
                   for s, start, count in todo}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                _, count = f.result()  # re-raises a worker's error here; finished shards stay on disk
                bar.update(count)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _read_verified(root: Path) -> dict:
    try:
        got = json.loads((root / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return got if isinstance(got, dict) else {}


def _write_verified(root: Path, checked: dict) -> None:
    """Record the shards whose sha256 just matched; a read-only folder keeps no record (each open hashes)."""
    try:
        atomic_write(root / VERIFIED, _json_bytes(checked))
    except OSError:
        pass


class ImageCache:
    """A complete cache opened read-only; ``image(i)`` is a view into a memory map (no copy)."""

    def __init__(self, root: str | Path, manifest: dict, index: pd.DataFrame):
        self.root = Path(root)
        self.manifest = manifest
        self.fingerprint: dict = manifest["fingerprint"]
        self.image_size: int = int(manifest["image_size"])
        self.shard_size: int = int(manifest["shard_size"])
        self.n_items: int = int(manifest["n_items"])
        self.index: pd.DataFrame = index
        self._maps: dict[int, np.memmap] = {}  # opened lazily, one per shard
        self.rendered = 0  # items that build_cache rendered when it returned this cache

    @classmethod
    def open(cls, root, verify: bool | str = True) -> "ImageCache":
        """Open a cache written by :func:`build_cache`; ``verify`` checks every shard's sha256.

        ``verify="auto"`` hashes only the shards whose size or modification time changed since their sha256
        last matched (recorded in ``.verified.json``, when the folder is writable): a shard edited or damaged in
        place is caught, at the cost of one full check, and an unchanged cache opens without reading its pixels.
        Raises :class:`CacheCorruptError` naming the file when the cache is incomplete (no manifest),
        a shard is missing, truncated or (with ``verify``) fails its sha256.
        """
        if verify not in (True, False, "auto"):
            raise ValueError(f"verify must be True, False or 'auto', got {verify!r}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"no image cache at {root}: the folder does not exist")
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise CacheCorruptError(f"image cache {root} is incomplete: no {MANIFEST}; rebuild with build_cache(...) "
                                    f"(the same call resumes an interrupted build)")
        m = _read_json(mpath)
        need = ("format", "fingerprint", "n_items", "image_size", "shard_size", "shards")
        missing = [k for k in need if k not in m]
        if missing:
            raise CacheCorruptError(f"{mpath}: missing key(s) {missing}; rebuild with build_cache(...)")
        if m["format"] != FORMAT_VERSION:
            raise CacheCorruptError(f"{mpath}: format {m['format']!r}, this code reads format {FORMAT_VERSION}; "
                                    f"rebuild with build_cache(...)")
        n, size, ssize = m["n_items"], m["image_size"], m["shard_size"]
        expected = math.ceil(n / ssize) if ssize else -1
        if not isinstance(m["shards"], list) or len(m["shards"]) != expected:
            raise CacheCorruptError(f"{mpath}: lists {len(m['shards']) if isinstance(m['shards'], list) else '?'} "
                                    f"shards, expected {expected} for {n} items in shards of {ssize}")
        rows: list[dict] = []
        keys: list[str] | None = None
        checked = _read_verified(root) if verify == "auto" else {}
        hashed = False
        for s, sh in enumerate(m["shards"]):
            start, count = s * ssize, min(ssize, n - s * ssize)
            upath, jpath = root / _shard_name(s, "u8"), root / _shard_name(s, "json")
            if sh.get("start") != start or sh.get("count") != count or sh.get("file") != upath.name:
                raise CacheCorruptError(f"{mpath}: shard {s} entry {sh} does not match items "
                                        f"[{start}, {start + count})")
            if not upath.is_file():
                raise CacheCorruptError(f"{upath}: missing shard file; rebuild with build_cache(...)")
            actual = upath.stat().st_size
            if actual != count * size * size:
                raise CacheCorruptError(f"{upath}: {actual:,} bytes, expected {count * size * size:,} "
                                        f"({count} images of {size}x{size}): truncated or overwritten; "
                                        f"rebuild with build_cache(...)")
            st = upath.stat()
            stamp = [st.st_size, st.st_mtime_ns, sh.get("sha256")]
            if verify and checked.get(upath.name) != stamp:
                sha = sha256_file(upath)
                if sha != sh.get("sha256"):
                    raise CacheCorruptError(f"{upath}: sha256 {sha} does not match the manifest's {sh.get('sha256')}: "
                                            f"the file is corrupt; rebuild with build_cache(...)")
                checked[upath.name], hashed = stamp, True
            try:
                meta = _read_json(jpath)
            except FileNotFoundError:
                raise CacheCorruptError(f"{jpath}: missing shard metadata; rebuild with build_cache(...)") from None
            if meta.get("sha256") != sh.get("sha256") or not isinstance(meta.get("rows"), list) \
                    or len(meta["rows"]) != count:
                raise CacheCorruptError(f"{jpath}: does not match {MANIFEST} (sha256 or row count); "
                                        f"rebuild with build_cache(...)")
            if keys is None and meta["rows"]:
                keys = list(meta["rows"][0])
            rows.extend({"item": start + j, **r} for j, r in enumerate(meta["rows"]))
        index = pd.DataFrame(rows, columns=["item"] + (keys or []))
        if hashed:
            _write_verified(root, checked)
        return cls(root, m, index)

    def verify(self, progress: bool = False) -> None:
        """Re-check every shard's size and sha256 against the manifest; raise CacheCorruptError naming a bad one."""
        for sh in tqdm(self.manifest["shards"], desc="verify", unit="shard", disable=not progress):
            upath = self.root / sh["file"]
            if not upath.is_file():
                raise CacheCorruptError(f"{upath}: missing shard file; rebuild with build_cache(...)")
            if upath.stat().st_size != sh["count"] * self.image_size ** 2:
                raise CacheCorruptError(f"{upath}: {upath.stat().st_size:,} bytes, expected "
                                        f"{sh['count'] * self.image_size ** 2:,}: truncated; "
                                        f"rebuild with build_cache(...)")
            sha = sha256_file(upath)
            if sha != sh["sha256"]:
                raise CacheCorruptError(f"{upath}: sha256 {sha} does not match the manifest's {sh['sha256']}: "
                                        f"the file is corrupt; rebuild with build_cache(...)")

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return f"ImageCache({self.n_items:,} items, {self.image_size}x{self.image_size} uint8, root='{self.root}')"

    def _map(self, s: int) -> np.memmap:
        mm = self._maps.get(s)
        if mm is None:
            sh = self.manifest["shards"][s]
            mm = np.memmap(self.root / sh["file"], dtype=np.uint8, mode="r",
                           shape=(sh["count"], self.image_size, self.image_size))  # (k, H, W)
            self._maps[s] = mm
        return mm

    def _check_item(self, i) -> int:
        return checked_index(i, self.n_items, f"item of {self!r}:")

    def image(self, i: int) -> np.ndarray:
        """Item ``i`` as a read-only (H, W) uint8 view into the shard's memory map."""
        i = self._check_item(i)
        return self._map(i // self.shard_size)[i % self.shard_size]

    def images(self, indices) -> np.ndarray:
        """Items ``indices`` as a (K, H, W) uint8 array (a copy), in the order given."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (K,)
        bad = (idx < -self.n_items) | (idx >= self.n_items)
        if bad.any():
            raise IndexError(f"item {int(idx[bad][0])} out of range for {self!r}")
        idx = np.where(idx < 0, idx + self.n_items, idx)
        out = np.empty((len(idx), self.image_size, self.image_size), dtype=np.uint8)  # (K, H, W)
        shard = idx // self.shard_size
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self._map(int(s))[idx[sel] - s * self.shard_size]
        return out

    # memory maps are not pickled (a DataLoader worker reopens them lazily instead of copying the pixels)
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
