"""Reading a run's metrics.jsonl (refers_lite.viz.plots): a line cut short by a kill, a corrupt log, an empty one."""
import json

import pytest

from refers_lite.viz.plots import plot_loss_curves, read_metrics, truncate_metrics

RECORDS = [{"step": s, "loss": 1.0 / s} for s in range(1, 5)]


def _log(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def test_a_half_written_last_line_is_dropped_with_a_warning_naming_the_file(tmp_path):
    path = _log(tmp_path / "metrics.jsonl", RECORDS, tail='{"step": 5, "lo')  # killed mid-write
    with pytest.warns(UserWarning, match=r"metrics.jsonl, line 5: dropping a half-written last line"):
        assert read_metrics(tmp_path) == RECORDS
    with pytest.warns(UserWarning, match="half-written"):
        truncate_metrics(path, step=3)  # what a resume does
    assert read_metrics(path) == RECORDS[:3]  # the cut line is gone from the file too: no warning now


def test_a_corrupt_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps(r) for r in RECORDS]
    lines[1] = lines[1][:10]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not JSON"):
        read_metrics(path)
    path.write_text('{"step": 1}\n[1, 2]\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a metrics record"):
        read_metrics(path)


def test_an_empty_log_has_nothing_to_plot(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    assert read_metrics(tmp_path) == []
    with pytest.raises(ValueError, match=r"metrics.jsonl: no training losses logged yet"):
        plot_loss_curves(tmp_path)
    with pytest.raises(FileNotFoundError, match="no metrics log"):
        read_metrics(tmp_path / "missing")
