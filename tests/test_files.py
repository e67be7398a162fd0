"""The one atomic writer (refers_lite.files)."""
import re
import time
from pathlib import Path

import pytest

from refers_lite.files import atomic_save, atomic_write, write_if_changed

PACKAGE = Path(__file__).resolve().parents[1] / "refers_lite"


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = atomic_write(tmp_path / "sub" / "a.json", '{"v": 1}\n')
    assert path.read_text() == '{"v": 1}\n' and oct(path.stat().st_mode & 0o777) == "0o644"

    def half(f):
        f.write(b'{"v": 2')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_save(path, half)
    assert path.read_text() == '{"v": 1}\n' and sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    before = path.stat().st_mtime_ns
    write_if_changed(path, '{"v": 1}\n')
    assert path.stat().st_mtime_ns == before  # identical: untouched
    write_if_changed(path, "new\n")
    assert path.read_text() == "new\n"


def test_no_other_hand_rolled_atomic_write_in_the_package():
    """Issue 18: one atomic writer, not six copies (a rename over a file happens only in refers_lite/files.py)."""
    found = [f"{f.relative_to(PACKAGE)}:{n + 1}" for f in sorted(PACKAGE.rglob("*.py")) if f.name != "files.py"
             for n, line in enumerate(f.read_text().splitlines())
             if re.search(r"os\.replace\(|os\.rename\(|mkstemp\(", line.split("#")[0])]
    assert not found, f"write files through refers_lite.files.atomic_save instead: {found}"


def test_atomic_save_can_leave_an_identical_file_alone(tmp_path):
    """Content written in pieces (the importer's studies.csv) keeps an identical file's modification time."""
    path = tmp_path / "t.csv"
    atomic_save(path, lambda f: (f.write(b"a,"), f.write(b"b\n")))
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    atomic_save(path, lambda f: (f.write(b"a,"), f.write(b"b\n")), keep_identical=True)
    assert path.stat().st_mtime_ns == before and not list(tmp_path.glob(".*.tmp"))
    atomic_save(path, lambda f: f.write(b"c\n"), keep_identical=True)
    assert path.read_bytes() == b"c\n"
