"""Writing files so that a reader or a crash never sees half of one: the project's one atomic writer.

Also the one file hash (:func:`sha256_file`) that checks assets, image-cache shards and encoders.

Every file the project writes for others to read (checkpoints, image cache shards and manifests, split files,
configs, results, fetched assets) goes through :func:`atomic_save`: the bytes go to a temp file in the same
folder (``.<name>.<random>.tmp``), are flushed and fsynced, and the temp file is renamed over the target, which
POSIX makes atomic. A reader sees the old file or the new one; a process killed mid-write leaves only a temp
file, which the next run that owns the folder removes (:func:`refers_lite.training.checkpoint.remove_stale_temps`).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_save", "atomic_write", "write_if_changed", "sha256_file", "require_csv_columns", "TEMP_PREFIX", "TEMP_SUFFIX"]

TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"  # a temp file: .<target name>.<random>.tmp, beside the target


def atomic_save(path: str | Path, write: Callable[[BinaryIO], None], keep_identical: bool = False) -> Path:
    """Call ``write(f)`` on a temp file beside ``path``, fsync it and rename it over ``path``; if ``write`` raises
    (a failed checksum, a full disk, Ctrl-C), the temp file is removed and ``path`` is left as it was.
    ``keep_identical``: when ``path`` already holds exactly the bytes written, it is left alone (its modification
    time too) and the temp file removed: :func:`write_if_changed` for content written in pieces."""
    import filecmp
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_identical and path.is_file() and filecmp.cmp(tmp, path, shallow=False):
            Path(tmp).unlink()
            return path
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write(path: str | Path, data: bytes | memoryview | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (:func:`atomic_save`)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return atomic_save(path, lambda f: f.write(payload))


def write_if_changed(path: str | Path, text: str) -> None:
    """Leave an identical file alone (its modification time too); otherwise write it atomically, so a reader
    (another process using a domain while it is re-built) sees the old file or the new one."""
    path = Path(path)
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeDecodeError):
        pass  # unreadable: replace it
    atomic_write(path, text)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte blocks (memory stays flat for multi-GB shards)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_csv_columns(path: str | Path, required, what: str) -> list[str]:
    """The header of the (possibly gzipped) CSV ``path``; ValueError naming ``what``, the file and the missing
    columns when one of ``required`` is absent, or when the file cannot be read as CSV."""
    import pandas as pd
    try:
        header = pd.read_csv(path, nrows=0)
    except Exception as e:  # gzip / parser errors: name the file
        raise ValueError(f"{what} {path} could not be read as CSV: {e}") from e
    missing = [c for c in required if c not in header.columns]
    if missing:
        raise ValueError(f"{what} {path} lacks column(s) {missing}; has {list(header.columns)}")
    return list(header.columns)
