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


def _one_line_error(argv, capsys, *expected):
    """main(argv) fails with exit code 2 and one stderr line naming what is wrong (no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"refers-lite {argv[0]}: error: ")
    for text in expected:
        assert text in err, err
    return err


def test_export_never_writes_over_its_checkpoint_or_a_folder(tmp_path, capsys):
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"a pre-training checkpoint")
    for out in (ckpt, tmp_path / ".." / tmp_path.name / "last.pt"):  # the same file, spelt another way
        _one_line_error(["export", str(ckpt), str(out)], capsys, f"{out}: is the checkpoint being exported")
    (tmp_path / "link.pt").symlink_to(ckpt)
    _one_line_error(["export", str(ckpt), str(tmp_path / "link.pt")], capsys, "is the checkpoint being exported")
    (tmp_path / "enc").mkdir()
    _one_line_error(["export", str(ckpt), str(tmp_path / "enc")], capsys, "enc: is a folder")
    assert ckpt.read_bytes() == b"a pre-training checkpoint" and not any((tmp_path / "enc").iterdir())


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    _one_line_error(["pretrain", "--config", str(run), "--out", str(tmp_path / "r")], capsys,
                    f"{run}: is a folder", f"--config {run / 'config.json'}")
    binary = tmp_path / "config.bin"
    binary.write_bytes(b"\xff\xfe{\x00}")
    _one_line_error(["pretrain", "--config", str(binary), "--out", str(tmp_path / "r")], capsys,
                    f"{binary}: not a text (UTF-8) file")
    _one_line_error(["config", "--config", str(tmp_path / "nope.json")], capsys, "nope.json: cannot read")
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    _one_line_error(["pretrain", "--profile", "smoke", "--out", str(afile), "--no-progress"], capsys,
                    f"{afile}: exists and is not a folder")
    assert afile.read_text() == "mine"
    (run / "metrics.jsonl").write_text("")
    _one_line_error(["plot", str(run)], capsys, f"{run / 'metrics.jsonl'}: no training losses logged yet")
    for seeds in ("a", "0,,1", "1.5"):
        _one_line_error(["experiments", "--seeds", seeds, "--out", str(tmp_path / "exp")], capsys,
                        f"--seeds wants comma-separated whole numbers (e.g. --seeds 0,1,2), got {seeds!r}")
    assert not (tmp_path / "exp").exists() and not (tmp_path / "r").exists()


def test_a_resume_rejected_from_the_command_line_keeps_config_json(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--profile", "smoke", "--out", str(out), "--no-progress",
                 "--set", "train.max_steps=2"]) == 0
    saved = (out / "config.json").read_text()
    _one_line_error(["pretrain", "--profile", "smoke", "--out", str(out), "--no-progress", "--set", "train.max_steps=2",
                     "--set", "train.lr_vision=0.5"], capsys, "differs in: train.lr_vision")
    assert (out / "config.json").read_text() == saved


def test_experiments_columns_are_parsed_and_a_bad_one_is_named():
    from refers_lite.cli import _columns
    assert _columns("nih:0.01, vindr:1") == [("nih", 0.01), ("vindr", 1.0)]
    for bad in ("nih", "nih:x", "nih:0", ":0.1", "nih:2"):
        with pytest.raises(ValueError, match="--columns"):
            _columns(bad)
