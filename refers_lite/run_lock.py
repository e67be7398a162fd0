"""One process at a time per run folder.

The experiment grid caches every pre-training and fine-tuning run in a folder named by a hash of its settings,
and the book's chapters run in parallel: two chapters that need the same run must not both train it into the
same files. :func:`run_lock` holds an exclusive lock on ``folder/.lock`` (``fcntl.flock``, released by the
operating system if the process dies); a second process that wants the same run waits, then finds it finished
and reuses it. ``wait=False`` refuses instead (:class:`RunFolderBusy`): two ``refers-lite pretrain`` or ``finetune``
commands pointed at one folder would otherwise both write every record of its ``metrics.jsonl``. A process that
already holds a folder's lock (in the same thread) may take it again (the grid locks a run, then ``pretrain`` locks its folder).
Where ``fcntl`` does not exist (Windows) the lock is a no-op: run one grid at a time there.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["run_lock", "RunFolderBusy"]

_HELD: dict[tuple[int, Path], int] = {}  # (thread, folder) locks held by this process, and how many times


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


@contextmanager
def run_lock(folder: str | Path, log: Callable[[str], None] | None = print, wait: bool = True) -> Iterator[None]:
    """Hold the run folder's lock for the ``with`` block (creating the folder); while another process holds it,
    wait, saying so once through ``log`` (``wait=False``: raise :class:`RunFolderBusy` naming the folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = (threading.get_ident(), folder.resolve())
    if fcntl is None or key in _HELD:  # no locks here, or this process holds it already
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
        return
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise RunFolderBusy(f"{folder}: another process is writing this run now (it holds {folder / '.lock'});"
                                    f" wait for it to finish, or choose another --out") from None
            if log is not None:
                log(f"waiting for another process that is running {folder} (it will then be reused)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # closing the descriptor releases the lock
