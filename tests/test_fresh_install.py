"""The package as a user without the repository gets it (issue 19, item 5): a wheel, installed into a fresh
virtual environment outside the repository, runs chapters 00 and 05 at smoke from an empty folder.

1. The wheel is built (``pip wheel --no-deps --no-build-isolation --no-index``) from a copy of the sources
   in ``tmp_path`` (pyproject.toml, README.md, refers_lite/), so the build leaves no ``build/`` or
   ``*.egg-info`` in the checkout.
2. A fresh venv in ``tmp_path`` (``venv --without-pip``) sees the dependencies this interpreter has, without
   the network, through one ``.pth`` file holding the path of this interpreter's site-packages. A plain path
   line adds the folder to ``sys.path`` but does not process the ``.pth`` files inside it, so the editable
   install of the checkout (``__editable__.refers_lite-*.pth`` and its finder) is never loaded: the only
   ``refers_lite`` the fresh venv can import is the wheel ``pip install --no-deps --no-index`` put into it.
3. A kernelspec installed into the fresh venv (``ipykernel install --prefix``) runs its interpreter.
4. Chapters 00 and 05 are copied into an empty folder (the cwd, outside the repository) and executed by
   papermill with that kernel at ``PROFILE=smoke``, ``DATA_DIR`` and ``RUNS_DIR`` inside the folder. One
   probe cell appended to each copy, after the chapter's last cell, proves what ran: ``sys.executable``,
   ``refers_lite.__file__``, no editable finder loaded, and the installed package's own assets folder
   (without the variable below) being the user cache, not a checkout. The
   pinned assets come from this checkout's fetched ``assets/`` through ``REFERS_LITE_ASSETS`` (the variable
   refers_lite.data.assets.default_assets_dir reads), so nothing touches the network; on a machine with no
   assets, ``setup_chapter`` would fetch them into ``~/.cache/refers_lite/assets``.

64-89 s on one CPU thread of the 2-core CPU shared with other jobs (wheel 3 s, venv and install 2 s,
chapter 00 about 45 s with its smoke data build and kernel start, chapter 05 about 20 s).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from refers_lite.data.assets import ASSETS, ASSETS_ENV, default_assets_dir

REPO = Path(__file__).resolve().parents[1]
CHAPTERS = ("00_data", "05_finetuning")
KERNEL = "refers-lite-fresh"

PROBE = r"""# appended by tests/test_fresh_install.py
import json, os, sys
import refers_lite
from refers_lite.data import assets
env_assets = os.environ.pop("REFERS_LITE_ASSETS", None)
os.environ["XDG_CACHE_HOME"] = "/nonexistent/xdg-cache"
print("PROBE " + json.dumps({
    "executable": sys.executable, "prefix": sys.prefix, "refers_lite": refers_lite.__file__,
    "editable": sorted(m for m in sys.modules if "__editable__" in m),
    "fallback_assets": str(assets.default_assets_dir()), "env_assets": env_assets,
}))
"""


def _copy_with_probe(chapter: Path, dest: Path) -> None:
    nb = json.loads(chapter.read_text(encoding="utf-8"))
    nb["cells"].append({"cell_type": "code", "execution_count": None, "id": "fresh-install-probe",
                        "metadata": {}, "outputs": [], "source": PROBE})
    dest.write_text(json.dumps(nb), encoding="utf-8")


def _run(cmd: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, cmd))}` (cwd {cwd}) exited {proc.returncode}:\n"
                    f"{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def _stream_text(nb: dict) -> str:
    return "".join("".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                   for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_chapters_00_and_05_from_an_empty_folder(tmp_path):
    pytest.importorskip("papermill")
    pytest.importorskip("ipykernel")
    assets = default_assets_dir()
    if not all((assets / a.relpath).is_file() for a in ASSETS.values()):
        pytest.skip(f"pinned assets not fetched into {assets} (make assets)")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP",
                                                             "VIRTUAL_ENV", ASSETS_ENV)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")

    # 1. the wheel, from a copy of the sources
    src, dist = tmp_path / "src", tmp_path / "dist"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "refers_lite", src / "refers_lite", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", dist, src], cwd=tmp_path, env=env)
    wheels = sorted(dist.glob("refers_lite-*.whl"))
    assert len(wheels) == 1, wheels

    # 2. the fresh venv: this interpreter's dependencies through one plain path line, then the wheel
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=env)
    py = venv / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=tmp_path, env=env).stdout.strip())
    deps = list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    assert purelib.resolve() not in [Path(d).resolve() for d in deps]
    (purelib / "_refers_lite_deps.pth").write_text("".join(d + "\n" for d in deps))
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheels[0]],
         cwd=tmp_path, env=env)
    installed = _run([py, "-c", "import refers_lite; print(refers_lite.__file__)"], cwd=tmp_path, env=env)
    assert Path(installed.stdout.strip()) == purelib / "refers_lite" / "__init__.py"

    # 3. a kernel of the fresh venv (the probe cell of step 4 proves that it runs the fresh interpreter)
    _run([py, "-m", "ipykernel", "install", "--prefix", venv, "--name", KERNEL, "--display-name", KERNEL],
         cwd=tmp_path, env=env)
    spec = json.loads((venv / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json").read_text())
    assert Path(spec["argv"][0]) == py
    work = tmp_path / "work"  # the empty folder the chapters run from
    work.mkdir()
    assert not work.resolve().is_relative_to(REPO)

    # 4. the chapters, from the empty folder, at smoke
    for name in CHAPTERS:
        _copy_with_probe(REPO / "notebooks" / f"{name}.ipynb", work / f"{name}.ipynb")
    papermill = [py, "-m", "papermill", "--no-progress-bar", "-k", KERNEL]
    for name in CHAPTERS:
        _run([*papermill, "-p", "PROFILE", "smoke", "-p", "DATA_DIR", work / "data" / "synthetic",
              "-p", "RUNS_DIR", work / "runs", f"{name}.ipynb", f"{name}.out.ipynb"],
             cwd=work, env={**env, ASSETS_ENV: str(assets)}, timeout=400)
        text = _stream_text(json.loads((work / f"{name}.out.ipynb").read_text()))
        assert "profile smoke; device" in text, f"{name}: no record_run line"
        probe = json.loads(text.split("PROBE ", 1)[1].splitlines()[0])
        assert Path(probe["executable"]) == py and Path(probe["prefix"]) == venv, probe
        assert Path(probe["refers_lite"]) == purelib / "refers_lite" / "__init__.py", probe
        assert not Path(probe["refers_lite"]).resolve().is_relative_to(REPO), probe
        assert probe["editable"] == [], probe
        assert probe["fallback_assets"] == "/nonexistent/xdg-cache/refers_lite/assets", probe  # no checkout
        assert probe["env_assets"] == str(assets), probe
    assert (work / "data" / "synthetic" / "nih" / "domain.json").is_file()
    assert (work / "data" / "iu_xray" / "report_tokenizer.json").is_file()
    assert any((work / "runs" / "experiments" / "smoke" / "pretrain").glob("refers-*/encoder.pt"))
