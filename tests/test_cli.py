import json
import shutil
import subprocess
import sys

import pytest

from refers_lite.cli import main


def test_help_explains_every_verb(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for verb in ("config", "pretrain", "export", "plot"):
        assert verb in out
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "--profile" in capsys.readouterr().out


def test_console_script_is_installed():
    exe = shutil.which("refers-lite") or str(__import__("pathlib").Path(sys.executable).parent / "refers-lite")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "pretrain" in res.stdout


def test_pretrain_export_plot_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--profile", "smoke", "--out", str(out), "--no-progress",
                 "--set", "train.max_steps=4"]) == 0
    assert "finished at step 4" in capsys.readouterr().out
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert json.loads((out / "config.json").read_text())["train"]["max_steps"] == 4
    assert main(["export", str(out / "best.pt"), str(tmp_path / "enc.pt")]) == 0
    assert (tmp_path / "enc.pt").is_file()
    assert main(["plot", str(out), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # run again: resumes, nothing left to do, nothing rewritten
    log = (out / "metrics.jsonl").read_text()
    assert main(["pretrain", "--config", str(out / "config.json"), "--out", str(out), "--no-progress"]) == 0
    assert "finished at step 4" in capsys.readouterr().out
    assert (out / "metrics.jsonl").read_text() == log


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["config", "--set", "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "x.pt")]) == 2
    assert "missing.pt: no such checkpoint" in capsys.readouterr().err


def test_config_prints_resolved_json(capsys):
    assert main(["config", "--profile", "paper", "--set", "model.agg_mode=add"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"]["agg_mode"] == "add" and cfg["train"]["max_steps"] == 300000
