"""The experiment grid (refers_lite.experiments): a smoke grid end to end, its tables and figure, resume."""
import pandas as pd
import pytest

import refers_lite.experiments as ex
from refers_lite.data.loading.source_studies import write_placeholder_source
from test_finetune import _domain

COLUMNS = (("nih", 0.1), ("nih", 1.0), ("covid_t2", 1.0))
METHODS = ("refers", "scratch", "no_task2", "lsp_transformer", "moco")
FAST = {"train": {"max_steps": 4, "batch_size": 4, "ckpt_every": 2}}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_placeholder_source(root / "source", n_studies=32, image_size=48, seed=0)
    _domain(root / "nih")
    _domain(root / "covid_t2", task="binary", classes=["blob"])
    return root


def _mean(df, method, column):
    domain, ratio = {"NIH 10%": ("nih", 0.1), "NIH 100%": ("nih", 1.0), "C-T2 All": ("covid_t2", 1.0)}[column]
    return df[(df.method == method) & (df.domain == domain) & (df.ratio == ratio)].groupby("seed").mean_auc.first().mean()


def _run(data_root, out, **kw):
    return ex.run_experiments("smoke", data_root, out, methods=METHODS, columns=COLUMNS, seeds=(0, 1),
                              pretrain_overrides=FAST, progress=False, log=lambda m: None, **kw)


@pytest.mark.slow
def test_a_smoke_grid_writes_every_table_and_the_figure(data_root, tmp_path):
    paths = _run(data_root, tmp_path)
    assert {"table1", "table2", "table3", "figure2"} <= set(paths) and all(p.is_file() for p in paths.values())
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == len(METHODS) * 2 * (2 * 2 + 1)  # methods x seeds x (nih: 2 ratios x 2 classes + covid: 1)
    t1 = (tmp_path / "table1.md").read_text()
    assert "Our REFERS" in t1 and "From scratch" in t1 and "p-value" in t1 and "NIH 10%" in t1 and "C-T2 All" in t1
    t3 = pd.read_csv(tmp_path / "table3.csv", index_col=0)
    assert list(t3.index) == [ex.METHODS[m].label for m in ("lsp_transformer", "no_task2", "refers")]
    t2 = (tmp_path / "table2.md").read_text()
    assert "LSP (Transformer)" in t2 and "From scratch" not in t2
    t1c = pd.read_csv(tmp_path / "table1.csv", index_col=0)
    # one best-other row and one p-value row, every column filled (the best other differs between columns)
    assert list(t1c.index[-2:]) == [ex.BEST_OTHER_ROW, ex.P_VALUE_ROW] and t1c.iloc[-2:].notna().all().all()
    for col in t1c.columns:
        means = {ex.METHODS[m].label: _mean(df, m, col) for m in ("moco", "lsp_transformer", "scratch")}
        assert t1c.loc[ex.BEST_OTHER_ROW, col] == max(means, key=means.get)
    assert t3.loc[ex.METHODS["no_task2"].label, "Task2"] != "✓"
    # the numbers in the table are the cells' own: mean over seeds of each cell's mean AUC
    vals = df[(df.method == "refers") & (df.domain == "nih") & (df.ratio == 1.0)].groupby("seed").mean_auc.first()
    assert f"{100 * vals.mean():.1f}" in t1
    # four pre-trainings (refers, its no-Task-2 variant, LSP, MoCo); scratch has none
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "pretrain").iterdir()) == ["lsp_transformer", "moco",
                                                                                       "no_task2", "refers"]
    assert "MoCo v2-style (ours)" in t1


@pytest.mark.slow
def test_an_interrupted_grid_resumes_without_redoing_finished_cells(data_root, tmp_path, monkeypatch):
    real = ex.finetune
    trained = []

    def counting(*a, **k):
        res = real(*a, **k)
        if not res.reused:
            trained.append(a[2:4])
        if len(trained) == 5 and not getattr(counting, "died", False):
            counting.died = True
            raise KeyboardInterrupt  # Ctrl-C after the 5th cell
        return res
    monkeypatch.setattr(ex, "finetune", counting)
    with pytest.raises(KeyboardInterrupt):
        _run(data_root, tmp_path)
    assert len(trained) == 5
    _run(data_root, tmp_path)
    total = len(METHODS) * len(COLUMNS) * 2
    assert len(trained) == total  # the 5 finished cells were not trained again
    before = len(trained)
    _run(data_root, tmp_path)  # a finished grid: everything reused
    assert len(trained) == before


def test_unknown_profile_method_or_missing_domain_are_clear_errors(data_root, tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        ex.run_experiments("huge", data_root, tmp_path)
    with pytest.raises(ValueError, match="unknown method"):
        ex.run_experiments("smoke", data_root, tmp_path, methods=("magic",), columns=COLUMNS, seeds=(0,))
    with pytest.raises(FileNotFoundError, match="vindr"):
        ex.run_experiments("smoke", data_root, tmp_path, methods=("scratch",), columns=(("vindr", 1.0),), seeds=(0,),
                           progress=False, log=lambda m: None)


def test_the_command_line_runs_a_grid(data_root, tmp_path, capsys, monkeypatch):
    from refers_lite.cli import main
    monkeypatch.setitem(ex.EXPERIMENT_PROFILES, "smoke", dict(ex.EXPERIMENT_PROFILES["smoke"], columns=COLUMNS[:1]))
    assert main(["experiments", "--profile", "smoke", "--data-root", str(data_root), "--out", str(tmp_path),
                 "--methods", "scratch", "--seeds", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "table1.md" in out and "From scratch" in out and (tmp_path / "figure2.png").is_file()


def test_the_command_line_passes_fine_tuning_overrides_and_refuses_bad_ones(tmp_path, monkeypatch, capsys):
    from refers_lite.cli import main
    seen = {}

    def fake(*args, **kw):
        seen.update(kw)
        (tmp_path / "table1.md").write_text("t1\n")
        return {"table1": tmp_path / "table1.md"}

    monkeypatch.setattr(ex, "run_experiments", fake)
    assert main(["experiments", "--profile", "demo", "--out", str(tmp_path), "--finetune", "encoder_lr_scale=0.1",
                 "lr=1e-3", "--no-progress"]) == 0
    assert seen["finetune_overrides"] == {"encoder_lr_scale": "0.1", "lr": "1e-3"}
    ft = ex.Grid("demo", tmp_path, tmp_path, (), (), (), {}, seen["finetune_overrides"]).finetune_config(
        ex.METHODS["refers"])
    assert ft.encoder_lr_scale == 0.1 and ft.lr == 1e-3
    seen.clear()
    assert main(["experiments", "--profile", "demo", "--out", str(tmp_path), "--finetune", "nope=1"]) != 0
    assert not seen and "nope" in capsys.readouterr().err


def test_chapter_subsets_share_cells_but_write_their_own_reports(data_root, tmp_path):
    kw = dict(methods=("scratch",), seeds=(0,), progress=False)
    ex.run_experiments("smoke", data_root, tmp_path, columns=(("nih", 1.0),), log=lambda m: None,
                       report_dir=tmp_path / "ch05", **kw)
    logs = []
    ex.run_experiments("smoke", data_root, tmp_path, columns=(("nih", 1.0), ("covid_t2", 1.0)), log=logs.append,
                       report_dir=tmp_path / "ch07", **kw)
    assert not (tmp_path / "results.csv").exists()  # the reports went to the chapters' folders
    assert set(pd.read_csv(tmp_path / "ch05" / "results.csv").domain) == {"nih"}
    assert set(pd.read_csv(tmp_path / "ch07" / "results.csv").domain) == {"nih", "covid_t2"}
    assert (tmp_path / "ch07" / "table1.md").is_file() and (tmp_path / "ch07" / "figure2.png").is_file()
    assert [m for m in logs if "nih" in m and "reused" in m]  # the shared cell was not trained again
    assert not [m for m in logs if "covid_t2" in m and "reused" in m]
    # grid_results: the cells (shared) and results.csv, no tables
    df = ex.grid_results("smoke", data_root, tmp_path, columns=(("covid_t2", 1.0),), log=logs.append,
                         report_dir=tmp_path / "ch08", **kw)
    assert set(df.domain) == {"covid_t2"} and (tmp_path / "ch08" / "results.csv").is_file()
    assert not (tmp_path / "ch08" / "table1.md").exists()
    assert "reused" in logs[-1]


def test_chapter_grids_are_subsets_of_the_methods_and_clear_errors_otherwise():
    for chapter, profiles in ex.CHAPTER_GRIDS.items():
        assert set(profiles) == set(ex.EXPERIMENT_PROFILES)
        for profile in profiles:
            g = ex.chapter_grid(chapter, profile)
            assert set(g["methods"]) <= set(ex.METHODS) and g["columns"] and g["seeds"]
            assert all(isinstance(c, tuple) for c in g["columns"])
            g["methods"] = ()  # a copy: the table itself is not changed
            assert ex.CHAPTER_GRIDS[chapter][profile]["methods"]
    with pytest.raises(ValueError, match="chapter grid"):
        ex.chapter_grid("nope", "demo")
    with pytest.raises(ValueError, match="profile"):
        ex.chapter_grid("ablations", "huge")


def test_the_cache_key_does_not_depend_on_how_the_data_path_is_spelled(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(data_root.parent)
    relative = ex.Grid("smoke", ex.Path(data_root.name), tmp_path, ("refers",), (), ())
    absolute = ex.Grid("smoke", data_root, tmp_path, ("refers",), (), ())
    a, b = relative.pretrain_config(ex.METHODS["refers"]), absolute.pretrain_config(ex.METHODS["refers"])
    assert a.to_dict() == b.to_dict() and ex.Path(a.data.root).is_absolute()


@pytest.mark.parametrize("profile", sorted(ex.EXPERIMENT_PROFILES))
def test_every_method_of_every_profile_and_chapter_grid_has_valid_configs(data_root, tmp_path, profile):
    # Only the smoke grid runs in CI; a config that a larger profile rejects (at demo the fine-tuning cap of
    # 150 steps once rejected LSP's 400 pre-training steps, in chapter 05 of `make book`) must fail here.
    grids = [dict(ex.EXPERIMENT_PROFILES[profile])] + [ex.chapter_grid(c, profile) for c in ex.CHAPTER_GRIDS]
    for kw in grids:
        grid = ex.Grid(profile, data_root, tmp_path, tuple(kw["methods"]), (), (),
                       kw.get("pretrain_overrides", {}), kw.get("finetune_overrides", {}))
        steps = grid.pretrain_config(ex.METHODS["refers"]).train.max_steps
        for name in kw["methods"]:
            method = ex.METHODS[name]
            grid.finetune_config(method)
            if method.kind == "lsp":
                cfg = ex.lsp_pretrain_config(grid, method)
                assert cfg.min_steps == cfg.max_steps == steps, (profile, name)
                ref = grid.pretrain_config(ex.METHODS["refers"]).train
                if name == "lsp_transformer":  # REFERS's optimizer where it is AdamW, else the fine-tuning SGD
                    want = ("adamw", ref.lr_vision) if ref.optimizer == "adamw" else ("sgd", grid.finetune_config(
                        method).lr)
                    assert (cfg.optimizer, cfg.lr) == want, (profile, cfg.optimizer, cfg.lr)
            elif method.kind == "moco":  # REFERS's steps, and its optimizer where it is AdamW (else MoCo's SGD)
                kw, ref = ex.moco_pretrain_kwargs(grid), grid.pretrain_config(ex.METHODS["refers"]).train
                assert kw["steps"] == steps and kw["batch_size"] >= ref.batch_size, (profile, kw)
                want = {"optimizer": "adamw", "lr": ref.lr_vision} if ref.optimizer == "adamw" else {}
                assert {k: kw[k] for k in ("optimizer", "lr") if k in kw} == want, (profile, kw)
            elif method.kind == "refers":
                grid.pretrain_config(method)


def test_imagenet_is_printed_as_not_available_with_its_reason_never_filled(data_root, tmp_path):
    logs = []
    paths = ex.run_experiments("smoke", data_root, tmp_path, methods=("imagenet", "scratch"), columns=COLUMNS[:1],
                               seeds=(0,), progress=False, log=logs.append)
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df.method) == {"scratch"}  # no cell was run for ImageNet
    why = ex.json.loads((tmp_path / "unavailable.json").read_text())["imagenet"]
    assert "no ImageNet-pre-trained ViT exists at the smoke profile" in why
    assert any("imagenet: not available here" in m for m in logs)
    t1 = pd.read_csv(tmp_path / "table1.csv", index_col=0)
    label = ex.METHODS["imagenet"].label
    assert list(t1.index) == [label, "From scratch"]  # in Table 1's order, beside the methods that ran
    assert (t1.loc[label] == "not available here").all() and "not available" not in str(t1.loc["From scratch"])
    assert f"{label}: not available here: {why}" in paths["table1"].read_text()
    with pytest.raises(ValueError, match="no method of the grid could run here.*imagenet: no ImageNet"):
        ex.run_experiments("smoke", data_root, tmp_path / "only", methods=("imagenet",), columns=COLUMNS[:1],
                           seeds=(0,), progress=False, log=lambda m: None)


def test_figure2_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend must survive Figure 2: switching to Agg inside the kernel made every later
    plt.show() of a chapter show nothing."""
    import matplotlib
    df = pd.DataFrame([{"method": m, "domain": "nih", "ratio": r, "seed": s, "class": "a", "auc": a, "mean_auc": a,
                        "val_mean_auc": a, "cell": ""} for m, a in (("refers", 0.7), ("scratch", 0.6))
                       for r in (0.01, 1.0) for s in (0, 1)])
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        out = ex.figure2(df, tmp_path / "f.png")
        assert matplotlib.get_backend() == "svg"
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)


def test_the_image_pretrained_baselines_run_last_and_the_rows_keep_the_grid_order(data_root, tmp_path, monkeypatch):
    """LSP and MoCo are fine-tuned after the methods that need no pre-training of their own, so that `make book`
    can pre-train them in its `baselines` job meanwhile; results.csv keeps the grid's order of methods.
    pretrain_chapter_baselines pre-trains exactly a chapter grid's LSP / MoCo runs."""
    from refers_lite.training.finetune import FinetuneResult
    order = []

    def fake_pretrain(grid, method, progress=True, log=print):
        order.append(method.name)
        return "scratch"

    def fake_finetune(encoder, droot, ratio, seed, cell, **kw):
        return FinetuneResult(cell, {"blob": 0.5, "stripe": 0.5}, 0.5, 0.5, 0, 1, 0.0)
    monkeypatch.setattr(ex, "pretrain_encoder", fake_pretrain)
    monkeypatch.setattr(ex, "finetune", fake_finetune)
    df = ex.grid_results("smoke", data_root, tmp_path, methods=("lsp_transformer", "refers", "moco", "scratch"),
                         columns=(("nih", 1.0),), seeds=(0,), progress=False, log=lambda m: None)
    assert order == ["refers", "scratch", "lsp_transformer", "moco"]
    assert list(dict.fromkeys(df.method)) == ["lsp_transformer", "refers", "moco", "scratch"]
    order.clear()
    ex.pretrain_chapter_baselines("smoke", data_root, tmp_path, log=lambda m: None)
    assert order == ["lsp_transformer"]  # chapter 05's grid at smoke: REFERS, LSP (Transformer), scratch
