"""The CAM chapter in a real browser (Debian's chromium, driven by Playwright; no network).

1. The chapter executed at the smoke profile (papermill keeps the widget state), converted to HTML
   by nbconvert with the widget JavaScript served from this machine (require.js and
   @jupyter-widgets/html-manager's embed-amd.js, the pinned files of `make book-js`): the CAM
   explorer renders from its saved state (DOM check + screenshot).
2. JupyterLab itself: a server on 127.0.0.1, the chapter opened, "Run All Cells" from the menu, the
   threshold slider dragged with the mouse, and the IoU readout changes -- what a user does.

Run after `make test-book`, they reuse its smoke build (``_build/smoke``, read only: the executed
chapter, the data, the pre-trained encoders; or CAM_EXECUTED, SMOKE_DATA_DIR, SMOKE_RUNS_DIR);
otherwise they build smoke data in a temporary folder and execute the chapter themselves (slower).
Both need chromium (skipped, with the reason, only when it is not installed) and the widget
JavaScript (`make book-js` fetches it into _build/widgets_js; WIDGETS_JS points elsewhere).
Screenshots are kept in _build/screenshots (SCREENSHOTS) for a look after the run.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "06_cam.ipynb"
WIDGETS_JS = Path(os.environ.get("WIDGETS_JS", ROOT / "_build" / "widgets_js"))
SMOKE = ROOT / "_build" / "smoke"  # what `make test-book` builds
EXECUTED = Path(os.environ.get("CAM_EXECUTED", SMOKE / "site" / "notebooks" / "06_cam.ipynb"))
SMOKE_DATA = Path(os.environ.get("SMOKE_DATA_DIR", SMOKE / "data" / "synthetic"))
SMOKE_RUNS = Path(os.environ.get("SMOKE_RUNS_DIR", SMOKE / "runs"))
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS", ROOT / "_build" / "screenshots"))
SOURCES = [ROOT / "notebooks" / "06_cam.ipynb", ROOT / "refers_lite" / "evaluation" / "cam.py",
           ROOT / "refers_lite" / "viz" / "widgets.py"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")


def _widget_js() -> Path:
    missing = [n for n in ("require.js", "embed-amd.js") if not (WIDGETS_JS / n).is_file()]
    if missing:
        pytest.fail(f"widget JavaScript {missing} not in {WIDGETS_JS}: run `make book-js` (pinned npm files, "
                    f"book/_tools/fetch_book_js.py) or set WIDGETS_JS")
    return WIDGETS_JS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh(path: Path) -> bool:
    """Built after the chapter and the library code it shows."""
    return path.is_file() and path.stat().st_mtime >= max(p.stat().st_mtime for p in SOURCES)


@pytest.fixture(scope="module")
def smoke_dirs(tmp_path_factory):
    """The chapter's parameters. DATA_DIR: the smoke book build's data when it is complete (only read),
    else smoke data built in a temporary folder. RUNS_DIR: a temporary folder, seeded with the smoke
    build's pre-trained REFERS encoders when there are some (the chapter then only fine-tunes, a few
    steps); nothing is written into the build."""
    base = tmp_path_factory.mktemp("cam_browser")
    runs = base / "runs"
    if all((SMOKE_DATA / d / "domain.json").is_file() for d in ("source", "nih")):
        for enc in SMOKE_RUNS.glob("experiments/smoke/pretrain/*/encoder.pt"):
            dst = runs / enc.relative_to(SMOKE_RUNS)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(enc, dst)
        return {"PROFILE": "smoke", "DATA_DIR": str(SMOKE_DATA), "RUNS_DIR": str(runs)}
    from refers_lite.data.assets import AssetMissingError
    from refers_lite.data.synthesis.domain_build import build_domains
    from refers_lite.data.reports.report_dataset import prepare_reports

    try:
        build_domains("smoke", base / "data" / "synthetic", only=["source", "nih"], progress=False, workers=1,
                      log=lambda *_: None)
    except AssetMissingError as e:
        pytest.fail(f"chest CT asset missing (make assets): {e}")
    prepare_reports(base / "data" / "iu_xray", seed=0)
    return {"PROFILE": "smoke", "DATA_DIR": str(base / "data" / "synthetic"), "RUNS_DIR": str(runs)}


def _screenshot(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / name


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)


def _not_blank(png: Path) -> float:
    with Image.open(png) as im:
        a = np.asarray(im.convert("L"), dtype=np.float32)
    return float((a < 200).mean())


# -- 1. the executed chapter as HTML, widgets rendered from their saved state ----------------------


def test_the_rendered_chapter_shows_the_cam_explorer_from_its_saved_widget_state(smoke_dirs, tmp_path):
    import nbformat
    import papermill
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    js = _widget_js()
    t0 = time.time()
    if _fresh(EXECUTED):  # the smoke book build executed it already
        out = EXECUTED
    else:
        out = tmp_path / "06_cam.ipynb"
        work = tmp_path / "work"
        work.mkdir()
        papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=smoke_dirs, cwd=str(work),
                                   kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert any(m["model_name"] == "FloatSliderModel" for m in state.values()), f"no widget state saved in {out}"
    site = tmp_path / "site"
    site.mkdir()
    for name in ("require.js", "embed-amd.js"):
        shutil.copy(js / name, site / name)
    exporter = HTMLExporter(template_name="lab", require_js_url="require.js", widget_renderer_url="embed-amd.js",
                            mathjax_url="")
    body, _ = exporter.from_notebook_node(nb)
    assert "cdn.jsdelivr.net/npm/@jupyter-widgets" not in body and 'src="require.js"' in body
    (site / "06_cam.html").write_text(body, encoding="utf-8")
    t_built = time.time() - t0

    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/06_cam.html"
    external, errors = [], []
    try:
        with sync_playwright() as p:
            browser = _launch(p)
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.on("pageerror", lambda e: errors.append(str(e)))

            def route(r):
                if r.request.url.startswith(f"http://127.0.0.1:{server.server_address[1]}/") or \
                        r.request.url.startswith("data:"):
                    return r.continue_()
                external.append(r.request.url)
                return r.abort()
            page.route("**/*", route)
            page.goto(url, wait_until="load")
            explorer = page.locator(".refers-cam-explorer")
            explorer.wait_for(timeout=20_000)
            explorer.scroll_into_view_if_needed()
            assert page.locator(".refers-cam-explorer .refers-cam-threshold .widget-slider, "
                                ".refers-cam-explorer .refers-cam-threshold .slider-container").count() >= 1
            readout = page.locator(".refers-cam-readout").inner_text()
            assert re.search(r"IoU", readout), readout
            picture = page.locator(".refers-cam-picture")
            assert picture.evaluate("img => img.naturalWidth") >= 64  # the saved overlay, decoded
            options = page.locator(".refers-cam-class select option").all_inner_texts()
            assert len(options) == 14 and all("·" in o for o in options), options  # classes with probabilities
            shot = _screenshot("06_cam_explorer_static.png")
            explorer.screenshot(path=str(shot))
            browser.close()
    finally:
        server.shutdown()
    assert not errors, f"JavaScript errors: {errors}"
    assert not [u for u in external if "require" in u or "html-manager" in u or "jupyter-widgets" in u], external
    assert 0.05 < _not_blank(shot) < 0.98, "the explorer's screenshot looks blank"
    print(f"\n{'reused ' + str(EXECUTED) if out == EXECUTED else 'executed'} + converted in {t_built:.0f} s; "
          f"rendered in chromium; screenshot {shot}")


# -- 2. JupyterLab: run the chapter, move the slider, watch the IoU --------------------------------


@pytest.fixture
def jupyterlab(tmp_path, smoke_dirs):
    """A JupyterLab server on 127.0.0.1 serving a folder with the chapter (smoke parameters injected as
    papermill injects them); yields (url, token); always stopped."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    root = tmp_path / "lab"
    root.mkdir()
    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), smoke_dirs)
    nbformat.write(nb, root / "06_cam.ipynb")
    port, token = _free_port(), "refers-cam-test"
    settings = tmp_path / "settings"
    for rel, value in (("@jupyterlab/notebook-extension/tracker",  # every cell in the DOM; no kernel dialog
                        {"windowingMode": "none", "autoStartDefaultKernel": True}),
                       ("@jupyterlab/apputils-extension/notification", {"fetchNews": "false"})):
        f = settings / f"{rel}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def _accept_dialogs(page) -> None:
    """Accept a JupyterLab dialog if one is up (e.g. "Select Kernel", proposing the notebook's own), as
    a user would."""
    button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if button.count():
        button.first.click()


def _wait(page, locator, timeout_s: float, what: str) -> None:
    """Wait for ``locator`` to be visible, accepting dialogs meanwhile."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        _accept_dialogs(page)
        if locator.count() and locator.first.is_visible():
            return
        page.wait_for_timeout(300)
    raise AssertionError(f"{what}: not there after {timeout_s:.0f} s")


def test_in_jupyterlab_moving_the_threshold_changes_the_iou_readout(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, token = jupyterlab
    t0 = time.time()
    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        try:
            page.goto(f"{url}/lab/tree/06_cam.ipynb?token={token}")
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
            idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                                ".jp-Toolbar-kernelStatus[data-status='idle']")
            _wait(page, idle, 90, "an idle kernel")
            page.wait_for_timeout(1000)
            _accept_dialogs(page)
            # A click on "Run All Cells" soon after the kernel turns idle is at times lost (no cell queued, the
            # kernel stays idle): click again until a cell is queued ([*]) or has run ([n]).
            queued = page.locator(".jp-Notebook .jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]"))
            for attempt in range(3):
                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
                run_all = page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
                page.locator("li.lm-Menu-item", has=run_all).click()
                try:
                    _wait(page, queued, 20, "a queued cell after Run All Cells")
                    break
                except AssertionError:
                    if attempt == 2:
                        raise
            slider = page.locator(".refers-cam-threshold")
            _wait(page, slider, 150, "the explorer after Run All Cells")  # the chapter runs, at the smoke profile
            slider.scroll_into_view_if_needed()
            iou = page.locator(".refers-cam-readout .refers-iou")
            iou.wait_for()
            readouts = [iou.inner_text()]
            assert readouts[0].startswith("IoU"), readouts
            page.screenshot(path=str(_screenshot("06_cam_jupyterlab_before.png")))
            handle = slider.locator(".noUi-handle")
            track = slider.locator(".noUi-target, .slider").first
            hb, tb = handle.bounding_box(), track.bounding_box()
            y = hb["y"] + hb["height"] / 2
            page.mouse.move(hb["x"] + hb["width"] / 2, y)
            page.mouse.down()
            for frac in (0.95, 0.7, 0.2):  # drag towards high thresholds (small boxes), then low ones (large)
                page.mouse.move(tb["x"] + frac * tb["width"], y, steps=8)
                try:  # the kernel recomputes the boxes and sends the new readout
                    page.wait_for_function("([sel, old]) => document.querySelector(sel).innerText !== old",
                                           arg=[".refers-cam-readout .refers-iou", readouts[-1]], timeout=8_000)
                except Exception:  # noqa: BLE001 - some moves leave the IoU as it was
                    pass
                readouts.append(iou.inner_text())
            page.mouse.up()
            value = slider.locator(".widget-readout").inner_text()
            page.screenshot(path=str(_screenshot("06_cam_jupyterlab_after.png")))
        except Exception as e:
            page.screenshot(path=str(_screenshot("06_cam_jupyterlab_failed.png")), full_page=True)
            stderr = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
            errs = [t[-800:] for t in page.locator(stderr).all_inner_texts()]
            raise AssertionError(f"JupyterLab: {type(e).__name__}: {str(e)[:1500]}\ncell errors: {errs}\n"
                                 f"screenshot: {SCREENSHOTS / '06_cam_jupyterlab_failed.png'}") from None
        finally:
            browser.close()
    print(f"\nJupyterLab: IoU readouts {readouts} (threshold now {value}) in {time.time() - t0:.0f} s; "
          f"screenshots in {SCREENSHOTS}")
    assert len(set(readouts)) >= 2, f"the IoU readout did not change when the threshold moved: {readouts}"
