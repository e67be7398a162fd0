"""The 'beyond REFERS' runner (refers_lite.evaluation.evaluate) and `refers-lite evaluate`, end to end on a smoke-sized
pre-trained model (a few steps on a placeholder source), with two small target domains."""
import json

import numpy as np
import pandas as pd
import pytest

from refers_lite.config import get_config
from refers_lite.data.loading.source_studies import SourceStudies, write_placeholder_source
from refers_lite.evaluation.evaluate import evaluate_run, finetuned_auc, initial_encoder, load_run
from refers_lite.training.pretrain import pretrain
from test_finetune import CLASSES, _domain

FAST = {"probe_ratios": (0.1, 1.0), "probe_seeds": (0, 1), "beams": (1, 2)}


def _pretrain(data_root, run, **loss):
    src = data_root / "source"
    vocab = SourceStudies(src, "train").report_tokenizer.vocab_size
    cfg = get_config("smoke", {"data": {"source": "source", "root": str(src)}, "loss": loss,
                               "model": {"vocab_size": max(128, vocab)},
                               "train": {"max_steps": 3, "batch_size": 4, "ckpt_every": 3, "log_every": 1}})
    pretrain(cfg, run, progress=False)
    return run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("beyond")
    data = root / "data"
    write_placeholder_source(data / "source", n_studies=24, image_size=48, seed=0)
    _domain(data / "nih")  # multilabel: blob, stripe
    _domain(data / "covid_t2", task="binary", classes=["blob"])
    grid = root / "grid"  # laid out as an experiment grid: grid/pretrain/refers-HASH, grid/results.csv
    run = _pretrain(data, grid / "pretrain" / "refers-0123abcd")
    pd.DataFrame([{"method": m, "domain": "nih", "ratio": 0.1, "seed": s, "class": c, "auc": a, "mean_auc": a}
                  for m, s, a in (("refers", 0, 0.6), ("refers", 1, 0.7), ("scratch", 0, 0.2)) for c in CLASSES]
                 ).to_csv(grid / "results.csv", index=False)
    return data, run


@pytest.mark.slow
def test_the_runner_writes_every_table_and_its_numbers_agree(setup, tmp_path):
    data, run = setup
    ev = evaluate_run(run, data, out=tmp_path, log=lambda m: None, **FAST)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"summary.json", "beyond.md", "zero_shot.csv", "retrieval.csv", "generated_reports.csv",
            "report_quality.csv", "clinical_f1.csv", "linear_probe.csv", "overview.csv"} <= files
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["profile"] == "smoke" and set(s["zero_shot"]) == {"nih", "covid_t2"}
    zs = pd.read_csv(tmp_path / "zero_shot.csv")
    nih = zs[zs.domain == "nih"]
    assert nih["class"].tolist() == CLASSES and nih["positive_prompt"].tolist() == ["there is blob.", "there is stripe."]
    assert s["zero_shot"]["nih"]["mean_auc"] == pytest.approx(nih["auc"].mean())
    # retrieval over the source test split, beside K / N
    n = len(SourceStudies(data / "source", "test"))
    assert s["retrieval"]["studies"] == n and s["retrieval"]["random"]["1"] == pytest.approx(1 / n)
    # reports for every test study, greedy and 2 beams
    reports = pd.read_csv(tmp_path / "generated_reports.csv", keep_default_na=False)
    assert len(reports) == n and {"greedy", "beam2"} <= set(reports.columns)
    assert set(s["report_quality"]) == {"greedy", "beam2", "real reports"}
    # linear probe: 2 domains x 2 ratios x 2 seeds, per class
    probe = pd.read_csv(tmp_path / "linear_probe.csv")
    assert len(probe) == 2 * 2 * (2 + 1) and set(probe.ratio) == {0.1, 1.0}
    # the grid's fine-tuned REFERS (not the other method) beside the zero-shot and the probe, at the same ratio
    ov = pd.read_csv(tmp_path / "overview.csv", index_col=0)
    assert ov.loc["nih", "fine-tuned 10%"] == pytest.approx(0.65) and np.isnan(ov.loc["covid_t2", "fine-tuned 10%"])
    assert ov.loc["nih", "zero-shot"] == pytest.approx(ev.zero_shot[0].mean_auc)
    lo, hi = ev.zero_shot[0].chance
    assert ov.loc["nih", "zero-shot chance 95 %"] == f"{lo:.3f}–{hi:.3f}" and lo < 0.5 < hi
    assert ov.loc["nih", "linear probe 100%"] == pytest.approx(
        probe[(probe.domain == "nih") & (probe.ratio == 1.0)].groupby("seed").auc.mean().mean())
    md = (tmp_path / "beyond.md").read_text()
    assert "Zero-shot" in md and "random (K / N)" in md and "BLEU-4" in md and "fine-tuned 10%" in md
    # the same probes of the architecture at random initialisation, on every domain, ratio and seed
    assert [p.domain for p in ev.random_probes] == [p.domain for p in ev.probes] == ["nih", "covid_t2"]
    rnd = pd.read_csv(tmp_path / "linear_probe_random_init.csv")
    key = ["domain", "ratio", "seed", "class"]
    assert sorted(map(tuple, rnd[key].values)) == sorted(map(tuple, probe[key].values))
    assert rnd.auc.between(0, 1).all() and not np.allclose(rnd.auc, probe.auc)  # other features, other fits
    assert "random_init_probe" in ev.seconds and set(s["random_init_probe"]) == {"nih", "covid_t2"}
    rs = ev.random_probe_summary()
    for d in ("nih", "covid_t2"):
        for r in (0.1, 1.0):
            want = rnd[(rnd.domain == d) & (rnd.ratio == r)].groupby("seed").auc.mean().mean()
            assert ov.loc[d, f"random-init probe {r:.0%}"] == pytest.approx(want)
            assert s["random_init_probe"][d][f"{r:g}"] == pytest.approx(want)
            assert float(rs[(rs.domain == d) & (rs.ratio == r)].mean_auc.iloc[0]) == pytest.approx(want)
    cols = list(ov.columns)  # the random-init columns right after the probe's, before fine-tuning
    assert cols.index("random-init probe 10%") == cols.index("linear probe 100%") + 1
    assert cols.index("random-init probe 100%") < cols.index("fine-tuned 10%")
    assert "random-init probe 100%" in md


def test_random_init_is_the_runs_initial_encoder(setup, tmp_path):
    """The baseline's weights are those pre-training started from (the Pretrainer's model before its first
    step), not the trained ones, and taking them leaves the global random state alone."""
    import torch
    from refers_lite.training.pretrain import Pretrainer
    _, run = setup
    model, cfg, _ = load_run(run, device="cpu")
    torch.manual_seed(123)
    want_next = torch.rand(3)
    torch.manual_seed(123)
    enc = initial_encoder(cfg)
    assert torch.equal(torch.rand(3), want_next) and not enc.training
    src = cfg.data.root
    trainer = Pretrainer(cfg, SourceStudies(src, "train"), SourceStudies(src, "validation"), tmp_path,
                         progress=False)
    start = trainer.module.encoder.state_dict()
    got = enc.state_dict()
    assert got.keys() == start.keys() and all(torch.equal(got[k], start[k].cpu()) for k in got)
    trained = model.encoder.state_dict()
    assert any(not torch.equal(got[k], trained[k]) for k in got)


def test_a_model_without_task_2_is_evaluated_where_it_can_be(setup, tmp_path):
    data, _ = setup
    run = _pretrain(data, tmp_path / "no_task2", use_consistency=False)
    ev = evaluate_run(run, data, out=tmp_path / "out", domains=["covid_t2"], finetuned=False, log=lambda m: None,
                      random_init_probes=False, **FAST)
    assert ev.zero_shot == [] and ev.retrieval is None and ev.quality is not None and len(ev.probes) == 1
    assert any("no text encoder" in n for n in ev.notes)
    assert not (tmp_path / "out" / "zero_shot.csv").exists() and (tmp_path / "out" / "linear_probe.csv").is_file()
    # the random-init baseline switched off: no probes, no time, no file, no columns
    assert ev.random_probes == [] and "random_init_probe" not in ev.seconds and "linear_probe" in ev.seconds
    assert not (tmp_path / "out" / "linear_probe_random_init.csv").exists()
    assert not any(c.startswith("random-init") for c in ev.overview().columns)
    assert "linear probe 100%" in ev.overview().columns


def test_finetuned_auc_and_clear_errors(setup, tmp_path):
    data, run = setup
    ft = finetuned_auc(run.parent.parent / "results.csv")
    row = ft[(ft.domain == "nih") & (ft.ratio == 0.1)].iloc[0]
    assert row.finetuned_mean_auc == pytest.approx(0.65) and row.seeds == 2
    with pytest.raises(ValueError, match="missing column"):
        finetuned_auc(pd.DataFrame({"method": ["refers"]}))
    with pytest.raises(FileNotFoundError, match="no pre-training checkpoint"):
        evaluate_run(tmp_path, data)
    with pytest.raises(FileNotFoundError, match="vindr"):
        evaluate_run(run, data, domains=["vindr"])
    with pytest.raises(ValueError, match="unknown setting"):
        evaluate_run(run, data, beam_width=3)


def test_the_command_line_evaluates_a_run(setup, tmp_path, capsys):
    from refers_lite.cli import main
    data, run = setup
    assert main(["evaluate", "--run", str(run), "--data-root", str(data), "--out", str(tmp_path),
                 "--domains", "covid_t2"]) == 0
    out = capsys.readouterr().out
    assert "beyond.md" in out and "Retrieval on the source test split" in out and "covid_t2" in out
    assert json.loads((tmp_path / "summary.json").read_text())["profile"] == "smoke"
    assert main(["evaluate", "--run", str(tmp_path / "nothing"), "--data-root", str(data)]) == 2
    assert "no such run folder" in capsys.readouterr().err
