"""The experiment grid's run-folder lock: a second claimant waits for the first and then goes on."""
import threading
import time

from refers_lite.run_lock import run_lock


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
