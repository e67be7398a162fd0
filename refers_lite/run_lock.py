"""One process at a time per run folder.

The experiment grid caches every pre-training and fine-tuning run in a folder named by a hash of its settings,
and the book's chapters run in parallel: two chapters that need the same run must not both train it into the
same files. :func:`run_lock` holds an exclusive lock on ``folder/.lock`` (``fcntl.flock``, released by the
operating system if the process dies); a second process that wants the same run waits, then finds it finished
and reuses it. Where ``fcntl`` does not exist (Windows) the lock is a no-op: run one grid at a time there.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["run_lock"]


@contextmanager
def run_lock(folder: str | Path, log: Callable[[str], None] | None = print) -> Iterator[None]:
    """Hold the run folder's lock for the ``with`` block (creating the folder); wait while another process holds
    it, saying so once through ``log``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"waiting for another process that is running {folder} (it will then be reused)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
