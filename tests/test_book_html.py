"""The built book, checked as a reader's browser sees it (headless Debian chromium, no network).

`make test` builds the book from the notebooks executed at PROFILE=smoke into
_build/smoke/site/_build/html, then runs this file with BOOK_HTML pointing there and
REQUIRE_BOOK_HTML=1, so in CI it never skips. Run alone, it checks whatever was built last at
BOOK_HTML (default: the smoke build) and skips when nothing is built.

Every page: no broken local link (href / src of a, img, script, link; #fragments included), every
image a real, decodable file, every chapter a Colab launch button, no script from the internet
(MathJax and the widget JavaScript are served by the book), no table left as raw text, no path of
the build machine. Every executed chapter: each cell that draws a figure holds an image. Rendered by chromium: the index and
the CAM chapter (scripts run without an uncaught error, the DOM holds their title and, for CAM,
the output figures, the screenshot is not blank), a chapter's equations typeset by MathJax, and a
page's widgets drawn.
"""
import os
import re
import shutil
import subprocess
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "smoke" / "site" / "_build" / "html")).resolve()
REQUIRED = os.environ.get("REQUIRE_BOOK_HTML") == "1"
CAM_CHAPTER = "notebooks/06_cam"
COLAB = "https://colab.research.google.com/github/"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# sphinx-book-theme and sphinx-thebe both write the (unused: no Thebe button) Thebe settings into
# notebook pages; the second `const` declaration throws. Harmless: the first one stands.
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)


@pytest.fixture(scope="module")
def site() -> Path:
    if not (HTML / "index.html").is_file():
        msg = f"no built book at {HTML} (`make test-book` builds it at PROFILE=smoke)"
        if REQUIRED:
            pytest.fail(msg)
        pytest.skip(msg)
    return HTML


class _Page(HTMLParser):
    """Links, images, scripts, element ids and text of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str]] = []  # (tag, url)
        self.images: list[str] = []
        self.scripts: list[dict] = []
        self.ids: set[str] = set()
        self.h1: list[str] = []
        self._in_h1 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) and tag in ("a", "img", "script", "link", "iframe", "source"):
                self.refs.append((tag, a[key]))
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        if tag == "script":
            self.scripts.append(a)
        if tag == "h1":
            self._in_h1 = True
            self.h1.append("")

    def handle_endtag(self, tag):
        if tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._in_h1:
            self.h1[-1] += data


@lru_cache(maxsize=None)
def parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p


def pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)


def local_target(page: Path, url: str) -> tuple[Path | None, str]:
    """(file a local url points to, its fragment); (None, "") for external urls."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith("//"):
        return None, ""
    if not parts.path:
        return page, parts.fragment
    target = (page.parent / unquote(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, parts.fragment


def toc_path() -> Path:
    """The table of contents the book was built from (the build folder's copy), else the repository's."""
    built = HTML.parent.parent / "_toc.yml"
    return built if built.is_file() else ROOT / "_toc.yml"


def toc_chapters() -> list[str]:
    toc = yaml.safe_load(toc_path().read_text())
    found = []

    def walk(node):
        if isinstance(node, dict):
            if str(node.get("file", "")).startswith("notebooks/"):
                found.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(toc)
    return found


# -- every page, read as files -------------------------------------------------------------------
def test_every_toc_entry_was_built(site):
    toc = yaml.safe_load(toc_path().read_text())
    entries = [toc["root"]] + [str(m) for m in re.findall(r"file:\s*(\S+)", toc_path().read_text())]
    missing = [e for e in entries if not (site / f"{e}.html").is_file()]
    assert not missing, f"pages of _toc.yml missing from the built book: {missing}"


def test_no_broken_local_links(site):
    broken = []
    for page in pages(site):
        for tag, url in parse(page).refs:
            target, fragment = local_target(page, url)
            if target is None:
                continue
            rel = page.relative_to(site)
            if not target.is_file():
                broken.append(f"{rel}: <{tag}> {url} (no such file)")
            elif fragment and target.suffix == ".html" and fragment not in parse(target).ids:
                broken.append(f"{rel}: <{tag}> {url} (no element with id {fragment!r})")
    assert not broken, f"{len(broken)} broken local link(s):\n" + "\n".join(broken[:40])


def test_every_image_is_a_real_picture(site):
    bad = []
    for page in pages(site):
        for src in parse(page).images:
            target, _ = local_target(page, src)
            if target is None or not target.is_file() or target.suffix.lower() == ".svg":
                continue  # external images never appear (the links test fails on missing local ones)
            try:
                with Image.open(target) as im:
                    im.verify()
                    ok = im.size[0] > 1 and im.size[1] > 1
            except Exception as e:  # noqa: BLE001 - any decoding failure is the finding
                ok, src = False, f"{src} ({e})"
            if not ok:
                bad.append(f"{page.relative_to(site)}: {src}")
    assert not bad, "images that are not pictures:\n" + "\n".join(bad)


def test_every_chapter_has_a_colab_launch_button(site):
    chapters = toc_chapters()
    assert chapters
    for ch in chapters:
        page = site / f"{ch}.html"
        urls = [u for _, u in parse(page).refs if u.startswith(COLAB)]
        assert any(u.endswith(f"/{ch}.ipynb") for u in urls), f"{ch}.html has no Colab button for {ch}.ipynb: {urls}"


def test_chapters_show_their_outputs(site):
    """Executed chapters, not empty shells: every chapter page holds cell outputs."""
    empty = [ch for ch in toc_chapters() if "cell_output" not in (site / f"{ch}.html").read_text()]
    assert not empty, f"chapters built without outputs (not executed?): {empty}"


def executed_chapters() -> list[Path]:
    """The executed notebooks the book was built from (SITE/notebooks, next to SITE/_build/html)."""
    return sorted((HTML.parent.parent / "notebooks").glob("*.ipynb"))


def test_every_figure_cell_holds_an_image(site):
    """A cell that draws a figure (plt.show, display of a figure, a plotting call of refers_lite) must hold
    an image output: a backend switched to Agg inside the kernel makes figures vanish without an error."""
    import json

    from refers_lite.viz.notebook import cells_missing_figures

    executed = executed_chapters()
    assert executed, f"no executed chapters next to {HTML}"
    missing = {p.stem: cells_missing_figures(json.loads(p.read_text(encoding="utf-8"))) for p in executed}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"cells that draw a figure but hold no image (chapter: cell indices): {missing}"


def test_the_architecture_figure_is_drawn_and_referenced(site):
    """Figure 1 of the paper, drawn by refers_lite.viz.figures.architecture_figure in chapter 04 (an image
    in that cell's outputs), and the model page links to it."""
    import json

    nb = HTML.parent.parent / "notebooks" / "04_pretraining.ipynb"
    cells = [c for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code" and "architecture_figure(" in "".join(c["source"])
             and not "".join(c["source"]).lstrip().startswith(("import", "from"))]
    assert cells and any("image/png" in o.get("data", {}) for o in cells[0].get("outputs", [])), \
        "chapter 04 does not show the architecture figure"
    assert any(url.endswith("04_pretraining.html") for _, url in parse(site / "book" / "model.html").refs), \
        "book/model.html does not link to the chapter that draws Figure 1"


def test_no_table_is_left_as_raw_text(site):
    """A Markdown table that failed to parse renders as a paragraph of pipes."""
    raw = [f"{p.relative_to(site)}: {m.group(0)[:80]}" for p in pages(site)
           for m in re.finditer(r"<p>\s*\|[^<]*\|\s*-{3}", p.read_text(encoding="utf-8", errors="replace"))]
    assert not raw, "tables rendered as raw text:\n" + "\n".join(raw)


def test_no_page_shows_a_path_of_the_build_machine(site):
    """The book is built inside the repository (make test: _build/smoke), so any absolute path of the build
    machine that a page shows contains the repository's own path."""
    here = str(ROOT) + "/"
    shown = [str(p.relative_to(site)) for p in pages(site) if here in p.read_text(encoding="utf-8", errors="replace")]
    assert not shown, f"pages that show a path under {here}: {shown}"


def test_widgets_load_their_javascript_locally(site):
    widget_pages = [p for p in pages(site) if WIDGET_STATE in p.read_text(encoding="utf-8", errors="replace")]
    for page in widget_pages:
        srcs = [s["src"] for s in parse(page).scripts if s.get("src")]
        for name in ("require.js", "embed-amd.js"):
            local = [s for s in srcs if urlsplit(s).path.endswith(f"_static/{name}")]
            assert local, f"{page.relative_to(site)} has widgets but does not load _static/{name}: {srcs}"
            target, _ = local_target(page, local[0])
            assert target.stat().st_size > 10_000
        assert not [s for s in srcs if "://" in s and ("require" in s or "html-manager" in s)], \
            f"{page.relative_to(site)} loads widget JavaScript from the internet"


def test_no_page_needs_the_internet_for_its_scripts(site):
    """MathJax and the widget JavaScript are served by the book (book/_tools/fetch_book_js.py), not CDNs."""
    remote = sorted({f"{p.relative_to(site)}: {s['src']}" for p in pages(site) for s in parse(p).scripts
                     if urlsplit(s.get("src", "")).scheme in ("http", "https")})
    assert not remote, "pages load scripts from the internet:\n" + "\n".join(remote[:20])


# -- the index and the CAM chapter, rendered -----------------------------------------------------
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "chromium is not installed (`make test` installs Debian's: apt-get install chromium)"
        if REQUIRED:
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def render(page: Path, tmp_path: Path) -> tuple[str, np.ndarray, list[str]]:
    """(the DOM after the page's scripts ran, the screenshot as an array, console errors)."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            "--window-size=1000,1400", "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / f"{page.stem}.png"
    dom = subprocess.run(base + [f"--user-data-dir={tmp_path / 'a'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    subprocess.run(base + [f"--user-data-dir={tmp_path / 'b'}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and shot.is_file(), f"chromium failed on {page}: {dom.stderr[-2000:]}"
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line
              and not any(known in line for known in KNOWN_JS_ERRORS)]
    with Image.open(shot) as im:
        return dom.stdout, np.asarray(im.convert("L"), dtype=np.float32), errors


def _check_rendered(site, rel, tmp_path):
    page = site / rel
    dom, shot, errors = render(page, tmp_path)
    title = parse(page).h1[0].replace("#", "").strip()
    assert title and title in dom, f"{rel}: its title {title!r} is not in the rendered page"
    assert "<article" in dom, f"{rel}: the rendered page has no article"
    assert not errors, f"{rel}: uncaught JavaScript errors:\n" + "\n".join(errors)
    ink = float((shot < 200).mean())  # fraction of the screenshot that is not (near) white
    assert shot.shape == (1400, 1000) and 0.01 < ink < 0.9, f"{rel}: the screenshot looks blank or broken " \
                                                            f"({ink:.1%} ink)"
    return dom


def index_page(site: Path) -> str:
    """The book's front page: index.html, or where its redirect points (Jupyter Book's root is book/index)."""
    m = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', (site / "index.html").read_text())
    if m:
        assert (site / m.group(1)).is_file(), f"index.html redirects to {m.group(1)}, which does not exist"
        return m.group(1)
    return "index.html"


def test_index_renders(site, tmp_path):
    dom = _check_rendered(site, index_page(site), tmp_path)
    for ch in toc_chapters():
        assert re.search(rf'href="[./]*{ch}\.html"', dom), f"the index's table of contents does not link {ch}"


def test_cam_chapter_renders_with_its_figures(site, tmp_path):
    if CAM_CHAPTER not in toc_chapters():
        if REQUIRED and (ROOT / f"{CAM_CHAPTER}.ipynb").is_file():
            pytest.fail(f"{CAM_CHAPTER}.ipynb exists but is not in _toc.yml")
        pytest.skip(f"{CAM_CHAPTER} is not in the book yet")
    dom = _check_rendered(site, f"{CAM_CHAPTER}.html", tmp_path)
    figures = re.findall(r'<img[^>]+src="\.\./_images/[^"]+\.png"', dom)
    assert len(figures) >= 2, f"{CAM_CHAPTER}: expected its CAM figures in the rendered page, found {len(figures)}"


def test_equations_are_typeset_offline(site, tmp_path):
    """MathJax, served by the book, turns the LaTeX of a chapter with equations into typeset math."""
    with_math = [p for p in pages(site) if 'class="math' in p.read_text(encoding="utf-8", errors="replace")]
    assert with_math, "no page of the book has an equation"
    page = next((p for p in with_math if p.stem.startswith("02_")), with_math[0])
    dom, _, errors = render(page, tmp_path)
    assert not errors, f"{page.relative_to(site)}: uncaught JavaScript errors:\n" + "\n".join(errors)
    assert "<mjx-container" in dom, f"{page.relative_to(site)}: MathJax did not typeset the equations"


def test_a_widget_page_renders_its_widgets_offline(site, tmp_path):
    widget_pages = [p for p in pages(site) if WIDGET_STATE in p.read_text(encoding="utf-8", errors="replace")]
    if not widget_pages:
        pytest.skip("no page of this build holds widgets")
    page = widget_pages[0]
    dom, _, errors = render(page, tmp_path)
    assert not errors, f"{page.relative_to(site)}: uncaught JavaScript errors:\n" + "\n".join(errors)
    assert re.search(r'class="[^"]*\bwidget-', dom), \
        f"{page.relative_to(site)}: the widgets did not render (no widget view in the rendered DOM)"
