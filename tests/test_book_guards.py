"""Guards of the book: the table of contents, the notebooks' shape, the book's own configuration.

These read files only (no notebook is executed here: `make test` executes every notebook at
PROFILE=smoke and builds the book from them; tests/test_book_html.py checks the result).
"""
import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BOOK_PAGES = sorted((ROOT / "book").glob("*.md"))


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "book" / "_tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


results_page = _load_tool("results_page")
fetch_book_js = _load_tool("fetch_book_js")


def toc_entries() -> list[str]:
    return results_page.toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))


def code_cells(nb_path: Path) -> list[dict]:
    return [c for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code"]


def src(cell: dict) -> str:
    return "".join(cell["source"])


# -- the table of contents --------------------------------------------------------------------
def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks in notebooks/"


def test_every_toc_entry_exists():
    missing = [e for e in toc_entries() if not any((ROOT / f"{e}{s}").is_file() for s in (".md", ".ipynb"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_toc_entries_are_unique():
    entries = toc_entries()
    assert len(entries) == len(set(entries)), f"_toc.yml lists a file twice: {entries}"


@pytest.mark.parametrize("path", NOTEBOOKS + BOOK_PAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_chapter_and_page_is_in_the_toc(path):
    entry = path.relative_to(ROOT).with_suffix("").as_posix()
    assert entry in toc_entries(), f"{path.relative_to(ROOT)} is not in _toc.yml (only_build_toc_files: it would " \
                                   f"never be built)"


def test_toc_keeps_the_book_pages_in_order():
    entries = toc_entries()
    assert entries[0] == "book/index"
    chapters = [e for e in entries if e.startswith("notebooks/")]
    assert chapters == sorted(chapters), f"chapters out of their numbered order in _toc.yml: {chapters}"
    for page in ("book/paper", "book/provenance", "book/running", "book/results", "book/references"):
        assert page in entries, f"{page} missing from _toc.yml"


# -- every notebook ----------------------------------------------------------------------------
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
class TestNotebook:
    def test_is_valid_nbformat_4_with_the_python3_kernel(self, nb_path):
        nb = nbformat.read(nb_path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3", \
            f"{nb_path.name}: kernelspec name must be 'python3' (papermill runs it with -k python3)"

    def test_has_no_outputs(self, nb_path):
        dirty = [i for i, c in enumerate(code_cells(nb_path)) if c.get("outputs") or c.get("execution_count")]
        assert not dirty, f"{nb_path.name}: code cells {dirty} carry outputs or execution counts; notebooks in git " \
                          f"are kept clean (the book build executes them)"

    def test_starts_with_a_titled_markdown_cell(self, nb_path):
        cells = json.loads(nb_path.read_text())["cells"]
        assert cells[0]["cell_type"] == "markdown" and re.match(r"#\s+\S", src(cells[0])), \
            f"{nb_path.name}: the first cell must be Markdown with the chapter's '# title'"

    def test_first_code_cell_is_the_parameters_cell_with_profile(self, nb_path):
        first = code_cells(nb_path)[0]
        assert "parameters" in first.get("metadata", {}).get("tags", []), \
            f"{nb_path.name}: the first code cell must be tagged 'parameters'"
        tree = ast.parse(src(first))
        values = {}
        for node in tree.body:
            assert isinstance(node, (ast.Assign, ast.AnnAssign)), \
                f"{nb_path.name}: the parameters cell holds assignments only, found {ast.dump(node)[:60]}"
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            values[target.id] = ast.literal_eval(node.value)
        assert values.get("PROFILE") == "demo", f"{nb_path.name}: PROFILE must default to 'demo', got {values}"

    def test_papermill_sees_the_parameters(self, nb_path):
        papermill = pytest.importorskip("papermill")
        params = papermill.inspect_notebook(str(nb_path))
        assert "PROFILE" in params
        uses_shared_runs = any("pretrained_refers" in src(c) for c in code_cells(nb_path))
        if uses_shared_runs:
            assert "RUNS_DIR" in params and "DATA_DIR" in params, \
                f"{nb_path.name} uses the shared pre-trained REFERS: it needs DATA_DIR and RUNS_DIR parameters " \
                f"(make book passes both)"

    def test_profile_decides_the_rest(self, nb_path):
        body = "".join(src(c) for c in code_cells(nb_path)[1:])
        assert re.search(r"\bPROFILE\b", body), f"{nb_path.name}: PROFILE is never used after the parameters cell"

    def test_second_code_cell_installs_only_on_colab(self, nb_path):
        second = src(code_cells(nb_path)[1])
        assert '"google.colab" in sys.modules' in second and "pip install" in second, \
            f"{nb_path.name}: the second code cell installs the package on Colab only (copy it from 04_pretraining)"

    def test_ends_by_recording_the_run(self, nb_path):
        last = src(code_cells(nb_path)[-1])
        assert re.search(r"^record_run\(chapter\b", last, flags=re.M), \
            f"{nb_path.name}: the last code cell records profile, device, versions and wall time with " \
            f"record_run(chapter) (refers_lite.viz.notebook)"
        headings = [m.group(1) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "markdown"
                    for m in re.finditer(r"^##\s+(.+?)\s*$", src(c), flags=re.M)]
        assert headings[-4:] == ["Summary", "Exercises", "Further reading", "Record of this run"], \
            f"{nb_path.name}: a chapter ends with Summary, Exercises, Further reading, then Record of this run; " \
            f"its last sections are {headings[-4:]}"

    def test_sets_up_with_setup_chapter_in_a_hidden_cell(self, nb_path):
        cells = code_cells(nb_path)
        setup = cells[2]
        assert re.search(r"^chapter = setup_chapter\(PROFILE\b", src(setup), flags=re.M), \
            f"{nb_path.name}: the third code cell sets the chapter up with setup_chapter(PROFILE, ...)"
        assert "hide-input" in setup.get("metadata", {}).get("tags", []), \
            f"{nb_path.name}: the set-up cell is tagged hide-input"
        assert "remove-input" in cells[1].get("metadata", {}).get("tags", []), \
            f"{nb_path.name}: the Colab install cell is tagged remove-input"
        assert not re.search(r"^t_start = |platform\.python_version", "".join(src(c) for c in cells), flags=re.M), \
            f"{nb_path.name}: the clock and the record belong to setup_chapter / record_run"

    def test_summary_and_exercises_have_their_size(self, nb_path):
        cells = json.loads(nb_path.read_text())["cells"]
        text = {}
        for c in cells:
            m = re.match(r"##\s+(Summary|Exercises)\s*$", src(c).splitlines()[0]) if c["cell_type"] == "markdown" \
                and src(c) else None
            if m:
                text[m.group(1)] = src(c)
        bullets = len(re.findall(r"^\* ", text.get("Summary", ""), flags=re.M))
        exercises = len(re.findall(r"^\d+\. ", text.get("Exercises", ""), flags=re.M))
        assert 3 <= bullets <= 5, f"{nb_path.name}: the Summary has {bullets} points (3-5)"
        assert 3 <= exercises <= 6, f"{nb_path.name}: the Exercises section has {exercises} exercises (3-6)"

    def test_opens_with_what_the_reader_will_learn(self, nb_path):
        head = "".join(src(c) for c in json.loads(nb_path.read_text())["cells"][:3] if c["cell_type"] == "markdown")
        assert re.search(r"you will learn", head, flags=re.I), \
            f"{nb_path.name}: the chapter opens with what the reader will learn"

    def test_code_lines_fit_a_page(self, nb_path):
        long = [(i, line[:60]) for i, c in enumerate(code_cells(nb_path)) for line in src(c).splitlines()
                if len(line) > 100]
        assert not long, f"{nb_path.name}: code lines over 100 characters (code cell, start): {long}"

    def test_has_no_paths_of_this_machine(self, nb_path):
        text = nb_path.read_text()
        assert "/work/" not in text and "/home/" not in text, f"{nb_path.name} names a path of one machine"


# -- the book's configuration ------------------------------------------------------------------
def test_config_builds_offline_with_launch_buttons():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"  # papermill executed them already
    assert cfg["only_build_toc_files"] is True
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["repository"]["url"].startswith("https://github.com/")


def test_javascript_is_served_by_the_book():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert cfg["html_static_path"] == ["book_js", "book/_js"]
    assert all((ROOT / "book" / "_js" / f).is_file() for f in cfg["html_js_files"])
    assert list(cfg["nb_ipywidgets_js"]) == list(fetch_book_js.WIDGET_FILES), \
        "_config.yml nb_ipywidgets_js must name the widget files fetch_book_js.py fetches"
    assert cfg["mathjax_path"] == fetch_book_js.MATHJAX_FILE
    fetched = {dst for p in fetch_book_js.PACKAGES for dst in p.members.values()}
    assert set(fetch_book_js.WIDGET_FILES) | {fetch_book_js.MATHJAX_FILE} <= fetched
    makefile = (ROOT / "Makefile").read_text()
    assert "$(SITE)/book_js" in makefile, "the Makefile must copy the fetched files to book_js/ in the build"


def test_results_page_has_its_marker():
    assert results_page.MARKER in (ROOT / "book" / "results.md").read_text()


# -- the book tools, on small made-up inputs ---------------------------------------------------
def _site(tmp_path, cells):
    (tmp_path / "book").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book" / "results.md").write_text(f"# Results\n\n{results_page.MARKER}\n")
    (tmp_path / "_toc.yml").write_text("root: book/index\nparts:\n  - chapters:\n      - file: notebooks/01_a\n"
                                       "      - file: notebooks/02_b\n      - file: book/results\n")
    nb = nbformat.v4.new_notebook(cells=cells)
    nbformat.write(nb, tmp_path / "notebooks" / "01_a.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# B")]),
                   tmp_path / "notebooks" / "02_b.ipynb")
    return tmp_path


def test_results_page_pastes_the_outputs_of_tagged_cells(tmp_path):
    table = nbformat.v4.new_output("display_data", data={"text/html": "<table></table>", "text/plain": "t"})
    printed = nbformat.v4.new_output("stream", name="stdout", text="not taken\n")
    tagged = nbformat.v4.new_code_cell("show()", outputs=[printed, table], metadata={"tags": ["results"]})
    untagged = nbformat.v4.new_code_cell("other()", outputs=[table])
    site = _site(tmp_path, [nbformat.v4.new_markdown_cell("# 01 · A chapter"),
                            nbformat.v4.new_markdown_cell("## The corpus"), tagged, untagged])
    assert results_page.main([str(site)]) == 0
    page = (site / "book" / "results.md").read_text()
    assert "## 01 · A chapter" in page and "[the chapter](../notebooks/01_a.ipynb)" in page
    assert "**The corpus**" in page
    assert page.count("```{glue}") == 1 and "```{glue} 01_a-2-0\n:doc: ../notebooks/01_a.ipynb\n```" in page
    assert "02_b" not in page  # a chapter without results gets no section
    cells = json.loads((site / "notebooks" / "01_a.ipynb").read_text())["cells"]
    assert cells[2]["outputs"][1]["metadata"]["scrapbook"] == {"name": "01_a-2-0", "mime_prefix": ""}
    assert "scrapbook" not in cells[3]["outputs"][0].get("metadata", {})


def test_results_page_without_results_says_so(tmp_path):
    site = _site(tmp_path, [nbformat.v4.new_markdown_cell("# A")])
    assert results_page.main([str(site)]) == 0
    assert "No chapter tagged a result" in (site / "book" / "results.md").read_text()


def test_results_page_needs_its_marker(tmp_path):
    site = _site(tmp_path, [nbformat.v4.new_markdown_cell("# A")])
    (site / "book" / "results.md").write_text("# Results\n")
    assert results_page.main([str(site)]) == 1


def _tarball(members: dict) -> bytes:
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_book_js_fetch_checks_the_pinned_sha256_and_keeps_intact_files(tmp_path, monkeypatch):
    members = {"package/x.js": b"define([], function () {});\n", "package/fonts/a.woff": b"wOFF-a",
               "package/fonts/b.woff": b"wOFF-b", "package/other.txt": b"not taken"}
    tgz = _tarball(members)
    pkg = fetch_book_js.NpmPackage("pkg", "1.0.0", fetch_book_js.sha256_bytes(tgz), "MIT",
                                   {"package/x.js": "x.js", "package/fonts/": "lib/fonts/"})
    bad = fetch_book_js.NpmPackage("pkg", "1.0.0", "0" * 64, "MIT", {"package/x.js": "x.js"})
    calls = []
    monkeypatch.setattr(fetch_book_js, "_tarball", lambda p: calls.append(p) or tgz)
    with pytest.raises(SystemExit, match="sha256"):
        fetch_book_js.fetch(bad, tmp_path)
    assert not (tmp_path / "x.js").exists()
    files = fetch_book_js.fetch(pkg, tmp_path)
    assert sorted(files) == ["lib/fonts/a.woff", "lib/fonts/b.woff", "x.js"]
    assert (tmp_path / "lib/fonts/b.woff").read_bytes() == b"wOFF-b"
    fetch_book_js.fetch(pkg, tmp_path)  # intact: no second download
    assert len(calls) == 2
    (tmp_path / "x.js").write_bytes(b"tampered")
    fetch_book_js.fetch(pkg, tmp_path)  # a changed file is fetched again
    assert len(calls) == 3 and (tmp_path / "x.js").read_bytes() == members["package/x.js"]


def test_book_js_pins_are_exact():
    for p in fetch_book_js.PACKAGES:
        assert re.fullmatch(r"\d+\.\d+\.\d+", p.version) and re.fullmatch(r"[0-9a-f]{64}", p.sha256)
        assert p.tarball_url.startswith("https://registry.npmjs.org/") and p.members


# -- every work cited is in the references -----------------------------------------------------
CITATION = re.compile(r"\b([A-Z][A-Za-z-]+)(?: et al\.?| & [A-Z][A-Za-z-]+| and [A-Z][A-Za-z-]+),? \(?[A-Za-z ,]*?\d{4}")
NAMED_WORKS = ("Grad-CAM", "rollout", "MoCo", "CheXzero", "ConVIRT", "CLIP", "ChestX-ray14", "DiffDRR",
               "TotalSegmentator", "LP-FT", "Early convolutions", "IU X-ray", "VinDr-CXR", "C2L")


def _cited_texts():
    for nb in NOTEBOOKS:
        for c in json.loads(nb.read_text())["cells"]:
            if c["cell_type"] == "markdown":
                yield nb.name, src(c)
    for page in BOOK_PAGES:
        if page.name != "references.md":
            yield page.name, page.read_text()


def test_references_hold_every_work_cited():
    refs = (ROOT / "book" / "references.md").read_text()
    missing = sorted({f"{where}: {m.group(0)}" for where, text in _cited_texts() for m in CITATION.finditer(text)
                      if m.group(1) not in refs})
    assert not missing, "works cited in the book but missing from book/references.md:\n" + "\n".join(missing)
    assert all(w in refs for w in NAMED_WORKS), [w for w in NAMED_WORKS if w not in refs]
