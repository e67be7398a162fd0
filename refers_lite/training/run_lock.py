"""One process at a time per run folder, and a record of what made it.

The experiment grid caches every pre-training and fine-tuning run in a folder named by a hash of its settings,
and the book's chapters run in parallel: two chapters that need the same run must not both train it into the
same files. :func:`run_lock` holds an exclusive lock on ``folder/.lock`` (``fcntl.flock``, released by the
operating system if the process dies); a second process that wants the same run waits, then finds it finished
and reuses it. ``wait=False`` refuses instead (:class:`RunFolderBusy`): two ``refers-lite pretrain`` or ``finetune``
commands pointed at one folder would otherwise both write every record of its ``metrics.jsonl``. A process that
already holds a folder's lock (in the same thread) may take it again (the grid locks a run, then ``pretrain``
locks its folder). Where ``fcntl`` does not exist (Windows) the lock is a no-op: run one grid at a time there.

A run folder is owned: :func:`claim_run_folder` writes ``run.json`` (the kind of run: pre-training, fine-tuning,
LSP, MoCo; a hash of its config), and a command of another kind refuses the folder unless told ``--overwrite``.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["run_lock", "RunFiles", "RunFolderBusy", "RunFolderOwned", "claim_run_folder", "run_owner"]

_HELD: dict[tuple[int, Path], int] = {}  # (thread, folder) locks held by this process, and how many times


class RunFiles:
    """The files of a training run folder ``self.out_dir`` (pre-training, MoCo): ``last.pt`` (resume), ``best.pt``
    (the kept checkpoint, where the trainer keeps one) and ``metrics.jsonl`` (one JSON record per logged step)."""

    out_dir: Path

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"


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


# -- who made a run folder --------------------------------------------------------------------------------------
OWNER_FILE = "run.json"  # {"kind": ..., "config_sha256": ...}: what made the folder's results
KINDS = ("pre-training", "fine-tuning", "lsp", "moco")
RUN_FILES = ("run.json", "config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "result.json",
             "encoder.pt")  # the files a run of any kind writes; --overwrite removes these and nothing else


class RunFolderOwned(ValueError):
    """The run folder holds results of another kind of run (or of other settings) than the command would make."""


def run_owner(folder: str | Path) -> dict | None:
    """The folder's ``run.json`` (None when there is none: a new folder, or one from before folders were owned)."""
    path = Path(folder) / OWNER_FILE
    if not path.is_file():
        return None
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunFolderOwned(f"{path}: unreadable ({e}); this folder's owner is unknown. Choose another --out, or "
                             f"pass --overwrite to replace its run") from e
    if not isinstance(owner, dict) or owner.get("kind") not in KINDS:
        raise RunFolderOwned(f"{path}: not a run record of refers-lite (kind must be one of {KINDS}). Choose another "
                             f"--out, or pass --overwrite to replace its run")
    return owner


def claim_run_folder(folder: str | Path, kind: str, config: dict | None = None, overwrite: bool = False,
                     check_only: bool = False) -> None:
    """Record that a ``kind`` run (of ``config``) writes ``folder``; hold its :func:`run_lock` first.

    A folder that another kind of run made (a fine-tuning folder given to ``pretrain``, ...) is refused with
    :class:`RunFolderOwned`, naming both and the way out; ``overwrite=True`` removes that run's files
    (:data:`RUN_FILES`, nothing else) and takes the folder. ``check_only``: refuse or return, write nothing."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    folder = Path(folder)
    try:
        owner = run_owner(folder)
    except RunFolderOwned:
        if not overwrite:
            raise
        owner = {"kind": "unknown"}
    if owner is not None and owner["kind"] != kind:
        if not overwrite:
            raise RunFolderOwned(f"{folder}: holds a {owner['kind']} run ({folder / OWNER_FILE}); a {kind} run here "
                                 f"would replace its files. Choose another --out, or pass --overwrite to replace it")
        if check_only:
            return
        for name in RUN_FILES:
            (folder / name).unlink(missing_ok=True)
    if check_only:
        return
    from ..files import atomic_write
    record = {"kind": kind}
    if config is not None:
        record["config_sha256"] = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
    atomic_write(folder / OWNER_FILE, json.dumps(record, indent=1) + "\n")
