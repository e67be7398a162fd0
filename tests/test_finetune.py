"""Fine-tuning (refers_lite.training.finetune) on a small domain whose labels can be seen in the pixels."""
import json

import numpy as np
import pytest
import torch

from refers_lite.training.checkpoint import ENCODER_FORMAT, save_checkpoint
from refers_lite.config import ConfigError, get_config
from refers_lite.data.loading.image_cache import build_cache
from refers_lite.data.loading.label_ratios import ratio_subsets, split_items, write_split_files
from refers_lite.training.run_lock import RunFolderOwned
from refers_lite.models.classifier import RadiographClassifier
from refers_lite.training.finetune import (_loss, _probabilities, build_encoder, finetune,
                                           get_finetune_config)
from refers_lite.models.radiograph_transformer import RadiographTransformer

SIZE, N = 40, 240
CLASSES = ["blob", "stripe"]


def _labels(i):
    return {"blob": int(i % 2 == 0), "stripe": int(i % 3 == 0)}


def _render(indices):
    out = []
    for i in indices:
        rng = np.random.default_rng(i)
        img = rng.normal(90, 12, (SIZE, SIZE))
        if _labels(i)["blob"]:  # a bright square somewhere in the middle
            y, x = rng.integers(8, SIZE - 18, 2)
            img[y:y + 10, x:x + 10] = 230
        if _labels(i)["stripe"]:  # a dark vertical band
            x = int(rng.integers(6, SIZE - 12))
            img[:, x:x + 6] = 10
        out.append((np.clip(img, 0, 255).astype(np.uint8), {"image_id": f"im{i:03d}", **_labels(i)}))
    return out


def _domain(root, task="multilabel", classes=CLASSES):
    build_cache(root / "cache", N, _render, fingerprint={"ft": 1}, image_size=SIZE, shard_size=128, progress=False)
    ids = [f"im{i:03d}" for i in range(N)]
    y = np.array([[_labels(i)[c] for c in classes] for i in range(N)])
    splits = split_items(ids, y)
    pos = {k: i for i, k in enumerate(ids)}
    write_split_files(root / "splits", splits, ratio_subsets(splits["train"], y[[pos[i] for i in splits["train"]]]))
    (root / "boxes.csv").write_text("image_id,label,x0,y0,x1,y1\n")
    (root / "domain.json").write_text(json.dumps({"name": "toyfind", "task": task, "classes": classes,
                                                  "image_size": SIZE, "source": "test", "attribution": "none"}))
    return root


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    return _domain(tmp_path_factory.mktemp("ft") / "dom")


def test_finetuning_from_scratch_learns_what_the_pixels_show(domain, tmp_path):
    cfg = get_finetune_config("smoke", {"min_steps": 90, "epochs": 3, "batch_size": 16, "lr": 3e-2})
    res = finetune("scratch", domain, 1.0, 0, tmp_path / "run", cfg=cfg, progress=False)
    assert res.steps == 90 and not res.reused
    assert set(res.test_auc) == set(CLASSES)
    # random features of a random ViT already separate these classes somewhat (0.83 here): training
    # must do clearly better than the same network and head left as initialised
    frozen = finetune("scratch", domain, 1.0, 0, tmp_path / "untrained", progress=False,
                      cfg=get_finetune_config("smoke", {"min_steps": 90, "epochs": 3, "batch_size": 16, "lr": 1e-9}))
    assert res.test_mean_auc > 0.88 and res.test_mean_auc > frozen.test_mean_auc + 0.05, (res.test_auc, frozen.test_auc)
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = {r["step"]: r["val_mean_auc"] for r in recs if "val_mean_auc" in r}
    assert len(vals) == 3 and res.best_step in vals and res.val_mean_auc == max(vals.values())  # chosen on validation
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["test_mean_auc"] == pytest.approx(res.test_mean_auc) and saved["n_train"] == len(
        (domain / "splits" / "train_100pct_seed0.txt").read_text().split())
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["classes"] == CLASSES and best["step"] == res.best_step


def test_a_finished_run_is_reused_and_a_changed_one_is_not(domain, tmp_path):
    cfg = get_finetune_config("smoke")
    first = finetune("scratch", domain, 0.1, 1, tmp_path / "run", cfg=cfg, progress=False)
    stamp = (tmp_path / "run" / "best.pt").stat().st_mtime_ns
    again = finetune("scratch", domain, 0.1, 1, tmp_path / "run", cfg=cfg, progress=False)
    assert again.reused and again.test_auc == first.test_auc
    assert (tmp_path / "run" / "best.pt").stat().st_mtime_ns == stamp
    changed = get_finetune_config("smoke", {"lr": 1e-3})
    with pytest.raises(RunFolderOwned, match="holds another run's result.json.*--overwrite"):
        finetune("scratch", domain, 0.1, 1, tmp_path / "run", cfg=changed, progress=False)  # nothing lost
    assert (tmp_path / "run" / "best.pt").stat().st_mtime_ns == stamp
    other = finetune("scratch", domain, 0.1, 1, tmp_path / "run", cfg=changed, progress=False, overwrite=True)
    assert not other.reused


def test_a_result_is_reused_only_for_the_same_data_and_encoder_contents(domain, tmp_path):
    """Issue 18 (#1): the reuse key was the encoder's path and the settings; another dataset, or another encoder
    re-exported to the same path, printed the earlier run's AUC as '(reused)'."""
    import shutil
    cfg = get_finetune_config("smoke")
    run = tmp_path / "run"
    finetune("scratch", domain, 0.1, 1, run, cfg=cfg, progress=False)
    other = shutil.copytree(domain, tmp_path / "other")  # the same files elsewhere, then other labels / splits
    read = lambda pct: (other / "splits" / f"train_{pct}pct_seed1.txt").read_text().split()
    small, ten, whole = read(1), read(10), read(100)
    rest = [i for i in whole[::-1] if i not in small]  # another 10 % subset, still holding the 1 % one
    mine = small + rest[:len(ten) - len(small)]
    assert set(mine) != set(ten)
    (other / "splits" / "train_10pct_seed1.txt").write_text("\n".join(mine) + "\n")
    with pytest.raises(RunFolderOwned):  # another dataset's result is not printed as this one's, nor replaced
        finetune("scratch", other, 0.1, 1, run, cfg=cfg, progress=False)
    res = finetune("scratch", other, 0.1, 1, run, cfg=cfg, progress=False, overwrite=True)
    assert not res.reused and json.loads((run / "config.json").read_text())["domain"] == str(other)
    assert finetune("scratch", other, 0.1, 1, run, cfg=cfg, progress=False).reused
    model_cfg = get_config("smoke")
    path = tmp_path / "encoder.pt"
    for seed, reused in ((3, False), (3, True), (4, False)):  # seed 4: another encoder at the same path
        torch.manual_seed(seed)
        enc = RadiographTransformer.from_config(model_cfg.model)
        save_checkpoint({"format": ENCODER_FORMAT, "config": model_cfg.to_dict(), "state_dict": enc.state_dict()},
                        path)
        if seed == 4:
            with pytest.raises(RunFolderOwned):
                finetune(path, other, 0.1, 1, tmp_path / "enc_run", cfg=cfg, progress=False)
        res = finetune(path, other, 0.1, 1, tmp_path / "enc_run", cfg=cfg, progress=False, overwrite=seed == 4)
        assert res.reused is reused
    with pytest.raises(FileNotFoundError, match="encoder file not found: .*missing.pt"):
        finetune(tmp_path / "missing.pt", other, 0.1, 1, tmp_path / "x", cfg=cfg, progress=False)


def test_label_ratio_files_are_used_as_written(domain, tmp_path):
    from refers_lite.training.finetune import Finetuner
    ids = (domain / "splits" / "train_10pct_seed2.txt").read_text().split()
    model = RadiographClassifier(build_encoder("scratch", "smoke"), 2)
    ft = Finetuner.for_domain(get_finetune_config("smoke"), model, domain, 0.1, 2, tmp_path, progress=False)
    assert ft.train_set.image_ids == ids


def test_a_pretrained_encoder_is_loaded_strictly(tmp_path):
    cfg = get_config("smoke")
    torch.manual_seed(3)
    enc = RadiographTransformer.from_config(cfg.model)
    path = save_checkpoint({"format": ENCODER_FORMAT, "config": cfg.to_dict(), "state_dict": enc.state_dict()},
                           tmp_path / "encoder.pt")
    loaded = build_encoder(path)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), loaded.state_dict().values()))
    assert not torch.equal(build_encoder("scratch").pos_embed, enc.pos_embed)


def test_losses_and_probabilities_per_task():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    onehot = torch.tensor([[0.0, 0.0, 1.0]])
    assert _probabilities("multiclass", logits).sum().item() == pytest.approx(1.0)
    assert _loss("multiclass", logits, onehot).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([2])).item())
    p = _probabilities("multilabel", logits)
    assert torch.allclose(p, logits.sigmoid())
    assert _loss("binary", logits[:, :1], onehot[:, :1]).item() == pytest.approx(
        torch.nn.functional.softplus(torch.tensor(2.0)).item())


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="optimizer"):
        get_finetune_config("smoke", {"optimizer": "rmsprop"})
    with pytest.raises(ConfigError, match="unknown key"):
        get_finetune_config("smoke", ["learning_rate=0.1"])
    assert get_finetune_config("paper").lr == 3e-3 and get_finetune_config("paper").batch_size == 128


def test_the_command_line_fine_tunes_and_reports(domain, tmp_path, capsys):
    from refers_lite.cli import main
    out = tmp_path / "cli"
    assert main(["finetune", "--encoder", "scratch", "--dataset", str(domain), "--ratio", "0.1", "--seed", "0",
                 "--profile", "smoke", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "blob" in text and "stripe" in text and "mean" in text and (out / "result.json").is_file()
    assert main(["finetune", "--encoder", "missing.pt", "--dataset", str(domain)]) == 2
    assert "no such encoder file" in capsys.readouterr().err
    assert main(["finetune", "--encoder", "scratch", "--dataset", "nope", "--data-root", str(tmp_path)]) == 2


def test_max_steps_caps_long_epochs(domain, tmp_path):
    cfg = get_finetune_config("smoke", {"min_steps": 3, "epochs": 4, "max_steps": 5, "batch_size": 4})
    res = finetune("scratch", domain, 1.0, 0, tmp_path / "run", cfg=cfg, progress=False)
    assert res.steps == 5  # 4 epochs of ~40 steps, capped
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum("val_mean_auc" in r for r in recs) >= 4  # still evaluated several times
    with pytest.raises(ConfigError, match="max_steps"):
        get_finetune_config("smoke", {"min_steps": 10, "max_steps": 5})


class _Fixed(torch.nn.Module):  # an "encoder" whose aggregation embedding is its input, rescaled and shifted
    width, image_size = 4, 1

    def __init__(self, scale=1.0, shift=0.0):
        super().__init__()
        self.scale, self.shift = scale, shift
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x.flatten(1) * self.scale * self.w + self.shift, None


def test_a_batchnorm_head_sees_standardised_features_whatever_their_scale():
    x = torch.randn(16, 1, 2, 2)
    outs = []
    for scale, shift in ((1.0, 0.0), (1e-2, 5.0)):  # small variations on a large common part
        torch.manual_seed(0)
        outs.append(RadiographClassifier(_Fixed(scale, shift), 3, norm="batchnorm").train()(x))
    assert torch.allclose(outs[0], outs[1], atol=2e-2)  # the head sees the same standardised features
    torch.manual_seed(0)
    plain = RadiographClassifier(_Fixed(1e-2, 5.0), 3).train()(x)
    assert plain.std(0).max() < 0.05 < outs[1].std(0).max()  # without it the logits barely vary
    with pytest.raises(ValueError, match="norm"):
        RadiographClassifier(_Fixed(), 3, norm="layer")
    with pytest.raises(ConfigError, match="head_norm"):
        get_finetune_config("smoke", {"head_norm": "layer"})


def test_the_encoder_learning_rate_scale_and_freezing():
    from refers_lite.training.finetune import _param_groups
    model = RadiographClassifier(_Fixed(), 2)
    groups = _param_groups(model, 1e-4, lr=0.1, encoder_lr_scale=0.1)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.encoder.w)] == pytest.approx(0.01) and lr_of[id(model.head.weight)] == pytest.approx(0.1)
    frozen = RadiographClassifier(_Fixed(), 2)
    groups = _param_groups(frozen, 1e-4, lr=0.1, encoder_lr_scale=0.0)
    assert not frozen.encoder.w.requires_grad and all(id(frozen.encoder.w) != id(p) for g in groups for p in g["params"])
    with pytest.raises(ConfigError, match="encoder_lr_scale"):
        get_finetune_config("smoke", {"encoder_lr_scale": 2.0})


def _fp32_probe(model, ft):
    """The linear probe of ``model``'s frozen encoder fitted as chapter 08 fits it (fp32 features, no autocast) on
    ``ft``'s training split, and the validation features: (probe, X_val)."""
    from refers_lite.evaluation.linear_probe import extract_features, fit_probe
    X = extract_features(model.encoder, ft.train_set, ft.augment)
    Xv = extract_features(model.encoder, ft.val_set, ft.augment)
    probe, _ = fit_probe(X, ft.train_set.labels_matrix(), Xv, ft.val_set.labels_matrix())
    return probe, Xv


def test_lp_ft_head_starts_as_the_probe_and_is_never_below_it_on_validation(domain, tmp_path):
    """head_init=probe (LP-FT): the head computes exactly the linear probe's scores at step 0, that is the
    first checkpoint, so the kept model's validation AUC is at least the probe's."""
    from refers_lite.data.loading.domain_dataset import DomainImages
    from refers_lite.training.finetune import Finetuner
    cfg = get_finetune_config("smoke", {"head_init": "probe", "min_steps": 6, "epochs": 2, "batch_size": 16,
                                        "lr": 3e-2})
    torch.manual_seed(0)
    model = RadiographClassifier(build_encoder("scratch", "smoke"), 2)
    ft = Finetuner.for_domain(cfg, model, domain, 1.0, 0, tmp_path / "run", progress=False)
    ft.init_head_from_probe()
    probe, Xv = _fp32_probe(model, ft)
    probs, _ = ft.predict(ft.val_set)
    np.testing.assert_allclose(probs, probe.predict(Xv), atol=1e-4)
    res = finetune("scratch", domain, 1.0, 0, tmp_path / "lpft", cfg=cfg, progress=False)
    recs = [json.loads(x) for x in (tmp_path / "lpft" / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["step"] == 0 and res.val_mean_auc >= recs[0]["val_mean_auc"]
    with pytest.raises(ConfigError, match="head_init"):
        get_finetune_config("smoke", {"head_init": "zeros"})


def test_a_batchnorm_head_starts_as_the_probe_with_its_standardisation(domain, tmp_path):
    """head_init=probe with head_norm=batchnorm: the probe's mean and scale become the norm's running statistics
    and its weights on standardised features the head's, so in evaluation mode step 0 scores as the probe does."""
    from refers_lite.training.finetune import Finetuner
    cfg = get_finetune_config("smoke", {"head_init": "probe", "head_norm": "batchnorm", "batch_size": 16})
    torch.manual_seed(0)
    model = RadiographClassifier(build_encoder("scratch", "smoke"), 2, norm="batchnorm")
    ft = Finetuner.for_domain(cfg, model, domain, 1.0, 0, tmp_path / "run", progress=False)
    ft.init_head_from_probe()
    probe, Xv = _fp32_probe(model, ft)
    np.testing.assert_allclose(model.norm.running_mean.numpy(), probe.mean, rtol=1e-5, atol=1e-6)
    probs, _ = ft.predict(ft.val_set)
    np.testing.assert_allclose(probs, probe.predict(Xv), atol=1e-4)
    assert model.head.weight.abs().max() < 50  # weights on standardised features, not on raw ones


def test_the_head_runs_in_fp32_under_bf16_autocast():
    """A probe-initialised head has large weights whose products nearly cancel; in bf16 its scores lost the
    ranking (NIH-like test AUC 0.664 against the probe's 0.703 before this was fixed)."""
    torch.manual_seed(0)

    class Features(torch.nn.Module):  # an "encoder" whose features vary by a little around a large constant
        width, image_size = 8, 4

        def forward(self, x):
            return 1.0 + 1e-3 * x.flatten(1)[:, :8], None
    model = RadiographClassifier(Features(), 1)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(1, 8) * 1e3)
        model.head.bias.fill_(-float(model.head.weight.sum()))
    x = torch.rand(16, 1, 4, 4)
    want = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)


def test_run_folders_are_owned_by_their_kind(domain, tmp_path):
    """Issue 18: a fine-tuning into a pre-training folder, or a pre-training into a fine-tuning folder, is refused
    before anything is written there (naming the folder, its kind and --overwrite); --overwrite replaces it."""
    from refers_lite.training.pretrain import pretrain
    pre = tmp_path / "pre"
    pretrain(get_config("smoke"), pre, progress=False, stop_after=2)
    assert json.loads((pre / "run.json").read_text())["kind"] == "pre-training"
    before = sorted((p.name, p.stat().st_mtime_ns) for p in pre.iterdir())
    with pytest.raises(RunFolderOwned, match=f"{pre}: holds a pre-training run .*--overwrite"):
        finetune("scratch", domain, 0.1, 1, pre, progress=False)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in pre.iterdir()) == before
    ft = tmp_path / "ft"
    finetune("scratch", domain, 0.1, 1, ft, progress=False)
    for resume in (True, False):  # --no-resume does not replace another kind's run either
        with pytest.raises(RunFolderOwned, match="holds a fine-tuning run"):
            pretrain(get_config("smoke"), ft, progress=False, resume=resume)
    pretrain(get_config("smoke"), ft, progress=False, stop_after=2, overwrite=True)
    assert json.loads((ft / "run.json").read_text())["kind"] == "pre-training"
    assert not (ft / "result.json").exists() and (ft / "last.pt").is_file()


def test_the_same_domain_spelled_as_another_path_is_reused(domain, tmp_path, monkeypatch):
    """The book's chapters pass a domain's path absolute, a CLI run relative: the same data (domain_sha256) and
    settings are the same run, reused, not trained again (it used to compare the path strings)."""
    cfg = get_finetune_config("smoke")
    first = finetune("scratch", domain, 0.1, 1, tmp_path / "run", cfg=cfg, progress=False)
    monkeypatch.chdir(domain.parent)
    again = finetune("scratch", type(domain)(domain.name), 0.1, 1, tmp_path / "run", cfg=cfg, progress=False)
    assert again.reused and again.test_auc == first.test_auc


def test_eval_precision_fp32_evaluates_the_probe_on_fp32_features_under_bf16(domain, tmp_path):
    """Trained in bf16, evaluated (and LP-FT's probe fitted) in fp32: step 0 scores exactly as the linear probe
    of the frozen encoder does on fp32 features (chapter 08's); the training precision stays bf16."""
    from refers_lite.training.finetune import Finetuner
    cfg = get_finetune_config("smoke", {"head_init": "probe", "precision": "bf16", "eval_precision": "fp32",
                                        "batch_size": 16})
    torch.manual_seed(0)
    model = RadiographClassifier(build_encoder("scratch", "smoke"), 2)
    ft = Finetuner.for_domain(cfg, model, domain, 1.0, 0, tmp_path / "run", progress=False)
    assert ft.precision.name == "bf16"
    ft.init_head_from_probe()
    probe, Xv = _fp32_probe(model, ft)  # fp32: no autocast
    probs, _ = ft.predict(ft.val_set)
    np.testing.assert_allclose(probs, probe.predict(Xv), atol=1e-4)
    with pytest.raises(ConfigError, match="eval_precision"):
        get_finetune_config("smoke", {"eval_precision": "bf16"})


def test_adamw_is_refers_course_optimizer_with_decoupled_weight_decay(domain, tmp_path):
    # LSP (Transformer) pre-trains with it at the course profiles (experiments.lsp_pretrain_config)
    from refers_lite.training.finetune import Finetuner
    cfg = get_finetune_config("smoke", {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "min_steps": 90,
                                        "epochs": 3, "batch_size": 16})
    model = RadiographClassifier(build_encoder("scratch", "smoke"), len(CLASSES))
    opt = Finetuner.for_domain(cfg, model, domain, 1.0, 0, tmp_path / "ft", progress=False).opt
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.05, 0.0}  # none on LayerNorm and biases
    res = finetune("scratch", domain, 1.0, 0, tmp_path / "run", cfg=cfg, progress=False)
    assert res.test_mean_auc > 0.88, res.test_auc  # it trains (a random ViT's features give about 0.83)


def test_frozen_batchnorm_keeps_the_probe_s_features_while_fine_tuning(domain, tmp_path):
    """freeze_batchnorm: the encoder's BatchNorm layers (the convolutional stem's) stay in evaluation mode in
    training steps, so the LP-FT head sees the features its probe was fit on (training-mode logits equal the
    evaluated ones) and the running statistics never move. Without it the training forward normalises by the
    batch: other features under the probe's head (a first loss of 374 against 0.86 for a from-scratch encoder on
    the NIH-like domain at demo, book/demo_diagnosis.md)."""
    import torch.nn as nn
    from refers_lite.training.finetune import Finetuner
    for frozen in (True, False):
        cfg = get_finetune_config("smoke", {"head_init": "probe", "freeze_batchnorm": frozen})
        torch.manual_seed(0)
        model = RadiographClassifier(build_encoder("scratch", "smoke", {"stem": "conv"}), 2)
        bns = [m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns, "the convolutional stem has BatchNorm layers"
        ft = Finetuner.for_domain(cfg, model, domain, 1.0, 0, tmp_path / f"run{frozen}", progress=False)
        ft.init_head_from_probe()
        x = ft._prepare(next(iter(torch.utils.data.DataLoader(ft.train_set, batch_size=16)))["image"], train=False)
        model.eval()
        with torch.no_grad():
            evaluated = model(x)
        stats = [b.running_mean.clone() for b in bns]
        ft.train_mode()
        assert model.training and model.head.training and all(b.training != frozen for b in bns)
        with torch.no_grad():
            trained = model(x)
        assert torch.allclose(trained, evaluated, atol=1e-5) == frozen
        assert all(torch.equal(s, b.running_mean) for s, b in zip(stats, bns)) == frozen
    assert not get_finetune_config("paper").freeze_batchnorm  # the plain PyTorch behaviour by default
