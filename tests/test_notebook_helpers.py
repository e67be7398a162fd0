"""refers_lite.viz.notebook: the set-up and record every chapter shares, the figure guard, the one
repository URL."""
import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

import refers_lite
from refers_lite.viz import notebook as nbh

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_setup_chapter_fetches_missing_assets_builds_missing_domains_and_prepares_reports(tmp_path, monkeypatch):
    import refers_lite.data.assets as assets
    import refers_lite.data.reports.report_dataset as rd
    import refers_lite.data.synthesis.domain_build as db

    fetched, built, prepared = [], [], []
    monkeypatch.setattr(assets, "asset_path", lambda name, dest: (_ for _ in ()).throw(
        assets.AssetMissingError(name)) if name == "chest_radiograph" else tmp_path / name)
    monkeypatch.setattr(assets, "fetch_assets", lambda dest, names, log: fetched.extend(names) or
                        {n: tmp_path / n for n in names})
    monkeypatch.setattr(db, "build_domains", lambda profile, out, only, seed, progress, log: built.append(
        (profile, only, seed)))
    monkeypatch.setattr(rd, "prepare_reports", lambda out, seed: prepared.append((Path(out), seed)))
    data = tmp_path / "data" / "synthetic"
    (data / "source").mkdir(parents=True)
    (data / "source" / "domain.json").write_text("{}")
    logs = []
    ch = nbh.setup_chapter("smoke", data, tmp_path / "runs", 3, domains=["source", "nih"], reports=True,
                           log=logs.append)
    assert fetched == ["chest_radiograph"]  # only the missing asset, through the function `make assets` runs
    assert built == [("smoke", ["nih"], 3)]  # only the missing domain
    assert prepared == [(data.parent / "iu_xray", 3)]
    assert ch.profile == "smoke" and ch.seed == 3 and ch.data_dir == data and ch.runs_dir == tmp_path / "runs"
    assert ch.on_colab is False and ch.elapsed() >= 0
    assert any("nih" in m for m in logs)


def test_setup_chapter_does_nothing_when_everything_is_there(tmp_path, monkeypatch):
    import refers_lite.data.assets as assets
    monkeypatch.setattr(assets, "asset_path", lambda name, dest: tmp_path / name)
    monkeypatch.setattr(assets, "fetch_assets", lambda *a, **k: pytest.fail("nothing to fetch"))
    ch = nbh.setup_chapter("demo", None, seed=0, log=lambda m: pytest.fail(m))
    assert ch.data_dir is None
    with pytest.raises(ValueError, match="data_dir"):
        nbh.setup_chapter("demo", None, domains=["source"], assets=False)


def test_chapter_log_hides_the_build_machine_paths(tmp_path, capsys):
    data, runs = tmp_path / "data" / "synthetic", tmp_path / "runs"
    ch = nbh.Chapter("smoke", data, runs, 0, 0.0, False)
    assert ch.short(f"reused {runs}/experiments/smoke/pretrain/x") == "reused RUNS_DIR/experiments/smoke/pretrain/x"
    assert ch.short(f"184 radiographs under {data}") == "184 radiographs under DATA_DIR"
    assert ch.short(f"files in {data.parent}/iu_xray") == "files in DATA_DIR/../iu_xray"
    ch.log(f"under {data}/nih")
    assert capsys.readouterr().out == "under DATA_DIR/nih\n"
    assert nbh.Chapter("smoke", None, None, 0, 0.0, False).short("/a/b") == "/a/b"


def test_setup_chapter_seeds_torch():
    import torch
    nbh.setup_chapter("smoke", assets=False, seed=5)
    a = torch.rand(3)
    nbh.setup_chapter("smoke", assets=False, seed=5)
    assert torch.equal(a, torch.rand(3))


def test_record_run_names_profile_device_versions_and_time(capsys):
    ch = nbh.Chapter("smoke", None, None, 0, 0.0, False)
    ch.t_start = __import__("time").time() - 12
    line = nbh.record_run(ch, packages=["pyyaml", "no-such-package-xyz"])
    assert capsys.readouterr().out.strip() == line
    assert line.startswith("profile smoke; device ")
    for what in ("python ", "torch ", "pyyaml ", "no-such-package-xyz not installed",
                 f"refers_lite {refers_lite.__version__}"):
        assert what in line
    assert re.search(r"wall time 1[23] s$", line)
    assert nbh.record_run(ch, show=False) and capsys.readouterr().out == ""


@pytest.mark.parametrize("source, draws", [
    ("fig, ax = plt.subplots()\nax.plot([1])\nplt.show()", True),
    ("fig = contact_sheet(size=64)\nplt.show()", True),
    ("ax = df.plot.bar()", True),
    ("fig = architecture_figure()\nfig", True),
    ("display(Image(filename='x.png'))", True),
    ("fig = plot_loss_curves(run)", True),
    ("fig, ax = plt.subplots()\nfig.savefig(buf)\nplt.close(fig)", False),  # drawn into a widget, not shown
    ("print('plt.show()')  # no\nx = 1", False),
    ("x = 1  # plt.show()", False),
    ("display(Markdown(table))", False),
])
def test_draws_figure(source, draws):
    assert nbh.draws_figure(source) is draws


def _executed(cells):
    return nbformat.v4.new_notebook(cells=cells)


def test_cells_missing_figures_finds_a_figure_cell_without_an_image():
    png = nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    text = nbformat.v4.new_output("display_data", data={"text/plain": "<Figure size 640x480 with 1 Axes>"})
    nb = _executed([nbformat.v4.new_markdown_cell("# A"),
                    nbformat.v4.new_code_cell("plt.plot([1])\nplt.show()", outputs=[png]),
                    nbformat.v4.new_code_cell("plt.plot([1])\nplt.show()", outputs=[text]),  # Agg: no picture
                    nbformat.v4.new_code_cell("fig = plot_token_lengths(c)\nplt.show()", outputs=[]),
                    nbformat.v4.new_code_cell("print(1)", outputs=[])])
    assert nbh.cells_missing_figures(nb) == [2, 3]
    assert nbh.cells_missing_figures(json.loads(nbformat.writes(nb))) == [2, 3]  # plain JSON too


def test_hide_injected_parameters(tmp_path):
    nb = _executed([nbformat.v4.new_code_cell("PROFILE = 'demo'", metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell("PROFILE = 'smoke'\nDATA_DIR = '/abs/path'",
                                              metadata={"tags": ["injected-parameters"]})])
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert nbh.hide_injected_parameters(path) == 1
    cells = json.loads(path.read_text())["cells"]
    assert cells[1]["metadata"]["tags"] == ["injected-parameters", "remove-cell"]
    assert cells[0]["metadata"]["tags"] == ["parameters"]
    assert nbh.hide_injected_parameters(path) == 0  # idempotent


# -- the repository URL is one setting ------------------------------------------------------------------
def test_repository_url_is_one_setting():
    url = refers_lite.REPOSITORY_URL
    assert url.startswith("https://github.com/") and not url.endswith("/")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["repository"]["url"] == url, "_config.yml repository.url must equal refers_lite.REPOSITORY_URL"
    assert nbh.install_requirement() == f"refers_lite @ git+{url}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_installs_from_the_one_url(nb_path):
    cells = [c for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code"]
    colab = "".join(cells[1]["source"])
    assert f'"{nbh.install_requirement()}"' in colab, \
        f"{nb_path.name}: the Colab cell must install {nbh.install_requirement()!r} (refers_lite.REPOSITORY_URL)"
    others = re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", nb_path.read_text())
    assert set(others) <= {refers_lite.REPOSITORY_URL}, f"{nb_path.name} names another repository URL: {others}"


# -- Figure 1, drawn by code ----------------------------------------------------------------------------
@pytest.mark.parametrize("views", [1, 3, 4])
def test_architecture_figure_draws_every_part(views, tmp_path):
    import matplotlib
    matplotlib.use("Agg")  # the test process only; the library never switches backends
    import matplotlib.pyplot as plt
    from PIL import Image

    from refers_lite.viz.figures import architecture_figure

    fig = architecture_figure(num_views=views)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for part in ("radiograph transformer", "recurrent concatenation", "view fusion", "Task 1: report generation",
                 "Task 2: study-report consistency", "Eq. 1", "Eq. 2", "BERT"):
        assert part in texts, part
    assert texts.count("radiograph\n") + texts.count("radiograph ") >= views
    fig.savefig(tmp_path / "fig1.png", dpi=50)
    with Image.open(tmp_path / "fig1.png") as im:
        assert im.size[0] > 300 and len(set(im.convert("L").getdata())) > 10  # a drawing, not a blank canvas
    plt.close(fig)
    with pytest.raises(ValueError):
        architecture_figure(num_views=0)


def test_figures_module_keeps_the_backend():
    src = (ROOT / "refers_lite" / "viz" / "figures.py").read_text()
    assert "matplotlib.use(" not in src and "switch_backend" not in src
