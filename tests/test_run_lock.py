"""The experiment grid's run-folder lock: a second claimant waits for the first and then goes on."""
import threading
import time

from refers_lite.training.run_lock import run_lock


def test_a_second_claimant_waits_until_the_first_releases(tmp_path):
    run, events, said = tmp_path / "pretrain" / "refers-abc", [], []

    def second():
        with run_lock(run, said.append):
            events.append("second in")

    with run_lock(run, said.append):
        assert run.is_dir() and (run / ".lock").is_file()
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        assert events == [] and t.is_alive()  # blocked while the first holds the folder
        events.append("first out")
    t.join(5)
    assert events == ["first out", "second in"]
    assert said == [f"waiting for another process that is running {run} (it will then be reused)"]


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    try:
        with run_lock(tmp_path, None):
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    said = []
    with run_lock(tmp_path, said.append):
        pass
    assert said == []  # free again: no wait


def test_a_busy_folder_is_refused_without_waiting_and_a_holder_may_lock_it_again(tmp_path):
    import fcntl
    import os

    import pytest

    from refers_lite.training.run_lock import RunFolderBusy
    with run_lock(tmp_path, None):
        with run_lock(tmp_path, None, wait=False):  # the grid locks a run, then pretrain locks its folder
            pass
    fd = os.open(tmp_path / ".lock", os.O_RDWR)  # another process's lock (another open file description)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(RunFolderBusy, match=f"{tmp_path}: another process is writing this run now"):
            with run_lock(tmp_path, None, wait=False):
                pass
    finally:
        os.close(fd)


def test_two_commands_into_one_run_folder(tmp_path, capsys):
    """Issue 18 (#5): a second pretrain / finetune into a folder another process is writing is refused, naming the
    folder, and writes nothing there; the CLI exits 2."""
    import fcntl
    import os

    from refers_lite.cli import main
    from test_finetune import _domain
    domain = _domain(tmp_path / "dom")
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the first command, still running
    busy = f"{out}: another process is writing this run now"
    try:
        assert main(["pretrain", "--profile", "smoke", "--out", str(out), "--no-progress"]) == 2
        assert busy in capsys.readouterr().err
        assert main(["finetune", "--encoder", "scratch", "--dataset", str(domain), "--profile", "smoke",
                     "--out", str(out), "--no-progress"]) == 2
        assert busy in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
    finally:
        os.close(fd)
    assert main(["finetune", "--encoder", "scratch", "--dataset", str(domain), "--profile", "smoke",
                 "--out", str(out), "--no-progress"]) == 0  # free again
