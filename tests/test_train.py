import json

import pytest
import torch

from conftest import model_inputs
from refers_lite.training.checkpoint import CheckpointError, load_checkpoint
from refers_lite.config import get_config
from refers_lite.models import REFERS
from refers_lite.training.pretrain import NonFiniteLossError, Pretrainer, build_optimizer, param_groups, pretrain
from refers_lite.training.runtime import resolve_precision, warmup_cosine


def test_weight_decay_groups_follow_the_paper():
    cfg = get_config("smoke", {"model": {"text_freeze_layers": 1, "random_text_depth": 2}})
    torch.manual_seed(0)
    model = REFERS.from_config(cfg)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert set(groups) == {"vision_decay", "vision_no_decay", "text_decay", "text_no_decay"}
    by_id = {id(p): name for name, p in model.named_parameters()}
    names = {k: {by_id[id(p)] for p in g["params"]} for k, g in groups.items()}
    # no decay on LayerNorm and biases, decay on the rest
    for k in ("vision_no_decay", "text_no_decay"):
        assert groups[k]["weight_decay"] == 0.0
        assert all(n.endswith("bias") or "norm" in n.lower() for n in names[k]), names[k]
    assert groups["vision_decay"]["weight_decay"] == cfg.train.weight_decay
    assert "encoder.blocks.0.attn.qkv.weight" in names["vision_decay"]
    assert "encoder.blocks.0.norm1.weight" in names["vision_no_decay"]
    assert "fusion.mlp.0.weight" in names["vision_decay"]
    # 3e-3-style lr for the radiograph transformer and fusion, 3e-4-style for report transformer and BERT
    assert groups["vision_decay"]["lr"] == cfg.train.lr_vision and groups["text_decay"]["lr"] == cfg.train.lr_text
    assert any(n.startswith("decoder.") for n in names["text_decay"])
    assert any(n.startswith("text_encoder.") for n in names["text_decay"])
    assert not any(n.startswith(("encoder.", "fusion.")) for n in names["text_decay"] | names["text_no_decay"])
    # frozen parameters are not optimised
    all_params = {n for v in names.values() for n in v}
    assert not any(n.startswith("text_encoder.backbone.encoder.layer.0.") for n in all_params)
    assert any(n.startswith("text_encoder.backbone.encoder.layer.1.") for n in all_params)


def test_optimizers_keep_the_groups():
    cfg = get_config("smoke")
    torch.manual_seed(0)
    model = REFERS.from_config(cfg)
    sgd, _ = build_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    adamw, sched = build_optimizer(model, get_config("smoke", {"train": {"optimizer": "adamw"}}), torch.device("cpu"))
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["name"] for g in adamw.param_groups] == [g["name"] for g in sgd.param_groups]
    assert [g["weight_decay"] for g in adamw.param_groups] == [g["weight_decay"] for g in sgd.param_groups]
    # the scheduler scales every group's own base lr
    assert [g["lr"] for g in adamw.param_groups] == pytest.approx(
        [b * warmup_cosine(0, cfg.train.warmup_steps, cfg.train.max_steps) for b in sched.base_lrs])


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)
    lrs = [warmup_cosine(s, 10, 100) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu).dtype is None
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16  # asked for: given, even where emulated
    p = resolve_precision("fp16", cpu)
    assert p.dtype == torch.float16 and p.use_scaler


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native):
    """auto never picks an emulated bf16 on a CPU (14x slower than fp32 on an AVX2-only EPYC)."""
    import refers_lite.training.runtime as runtime
    monkeypatch.setattr(runtime.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert runtime.cpu_has_native_bf16() is native
    p = resolve_precision("auto", torch.device("cpu"))
    assert p.name == ("bf16" if native else "fp32")
    assert p.dtype == (torch.bfloat16 if native else None) and not p.use_scaler
    assert ("in hardware" if native else "no native bf16") in p.reason


def test_auto_precision_without_onednn_is_fp32(monkeypatch):
    import refers_lite.training.runtime as runtime

    def missing():
        raise RuntimeError("no oneDNN")
    monkeypatch.setattr(runtime.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", missing)
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32"


def test_smoke_run_writes_checkpoints_logs_and_curves(tmp_path):
    cfg = get_config("smoke")
    res = pretrain(cfg, tmp_path, progress=False)
    assert res.step == cfg.train.max_steps and not res.interrupted
    for f in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "loss_curves.png",
              "report_tokenizer.json"):
        assert (tmp_path / f).is_file(), f
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["config"] == cfg.to_dict() and ckpt["step"] == cfg.train.max_steps
    recs = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in recs if "val_loss" in r]
    steps_per_epoch = 18 // cfg.train.batch_size
    assert len(vals) == -(-cfg.train.max_steps // steps_per_epoch)  # once per epoch (+ a final partial one)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in vals))


def test_validation_runs_once_per_step_where_val_every_meets_an_epochs_end_or_the_last_step(tmp_path):
    """val_every=2 with 4 steps an epoch and 6 steps: step 4 is both a val_every step and an epoch's end, step 6
    both a val_every step and the run's mid-epoch end; each is validated (and logged) once."""
    cfg = get_config("smoke", {"train": {"max_steps": 6, "val_every": 2}})
    pretrain(cfg, tmp_path, progress=False)
    recs = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "val_loss" in r] == [2, 4, 6]


@pytest.mark.parametrize("overrides", [
    {},  # fp32, dropout on: the RNG state must be restored exactly
    {"train": {"precision": "bf16", "ckpt_every": 3}},
])
def test_kill_and_resume_equals_the_uninterrupted_run(tmp_path, overrides):
    cfg = get_config("smoke", overrides)
    full = pretrain(cfg, tmp_path / "full", progress=False)
    part = pretrain(cfg, tmp_path / "part", progress=False, stop_after=5)  # "killed" after step 5
    assert part.interrupted and part.step == 5
    rest = pretrain(cfg, tmp_path / "part", progress=False)  # the same command again resumes
    assert rest.step == full.step
    a, b = load_checkpoint(full.last_checkpoint), load_checkpoint(rest.last_checkpoint)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["best_val_loss"] == b["best_val_loss"]
    # the log has no duplicated steps after the resume
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]
    assert steps == sorted(set(steps))


def test_resume_from_a_checkpoint_older_than_the_kill(tmp_path):
    """Killed between checkpoints: the steps after last.pt are redone and the result is the same."""
    cfg = get_config("smoke", {"train": {"ckpt_every": 4}})
    full = pretrain(cfg, tmp_path / "full", progress=False)
    t = Pretrainer(cfg, *_toy(cfg), tmp_path / "part", progress=False)

    def die_at_step_6(trainer, rec):
        if trainer.step == 6:
            raise RuntimeError("simulated crash")
    with pytest.raises(RuntimeError, match="simulated crash"):
        t.fit(callback=die_at_step_6)
    assert load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 4
    rest = Pretrainer(cfg, *_toy(cfg), tmp_path / "part", progress=False).fit()
    a, b = load_checkpoint(full.last_checkpoint)["model"], load_checkpoint(rest.last_checkpoint)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _toy(cfg):
    from refers_lite.data.loading.toy import build_toy_datasets
    train, val, _ = build_toy_datasets(cfg)
    return train, val


def test_ctrl_c_saves_last_checkpoint(tmp_path):
    cfg = get_config("smoke")

    def interrupt(trainer, rec):
        if trainer.step == 4:
            raise KeyboardInterrupt
    res = Pretrainer(cfg, *_toy(cfg), tmp_path, progress=False).fit(callback=interrupt)
    assert res.interrupted and load_checkpoint(tmp_path / "last.pt")["step"] == 4


def test_resume_refuses_a_different_config(tmp_path):
    pretrain(get_config("smoke"), tmp_path, progress=False, stop_after=2)
    with pytest.raises(CheckpointError, match="different config.*model.agg_mode"):
        pretrain(get_config("smoke", {"model": {"agg_mode": "add"}}), tmp_path, progress=False)
    # where it runs and how often it logs may change
    res = pretrain(get_config("smoke", {"train": {"log_every": 3, "device": "cpu"}}), tmp_path, progress=False)
    assert res.step == get_config("smoke").train.max_steps


def test_training_reduces_the_loss_on_a_fixed_batch(batch):
    cfg = get_config("smoke", {"model": {"decoder_dropout": 0.0}, "train": {"max_steps": 40, "warmup_steps": 0,
                                                                             "lr_vision": 0.05, "lr_text": 0.05}})
    torch.manual_seed(0)
    model = REFERS.from_config(cfg)
    opt, sched = build_optimizer(model, cfg, torch.device("cpu"))
    losses = []
    for _ in range(40):
        out = model(**model_inputs(batch))
        opt.zero_grad()
        out.losses.total.backward()
        opt.step()
        losses.append(out.losses.total.item())
    assert losses[-1] < 0.7 * losses[0]


def test_nan_under_fp16_is_skipped_by_the_scaler(tmp_path, toy):
    cfg = get_config("smoke", {"train": {"precision": "fp16"}})
    train, val, _ = toy
    t = Pretrainer(cfg, train, val, tmp_path, progress=False)
    loader = t._loader(t.train_set, t.sampler, drop_last=True)
    batch = next(iter(loader))
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    scale = t.scaler.get_scale()
    bad = dict(batch, images=batch["images"].clone())
    bad["images"][0, 0, 0, 0, 0] = float("nan")
    stats = t.train_step(bad)
    assert stats["skipped"] and t.scaler.get_scale() < scale
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    stats = t.train_step(batch)  # a good batch trains again
    assert not stats["skipped"]
    assert not all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())


def test_persistent_nan_without_scaler_is_a_clear_error(tmp_path, toy):
    cfg = get_config("smoke", {"train": {"max_nonfinite": 2}})
    train, val, _ = toy
    t = Pretrainer(cfg, train, val, tmp_path, progress=False)
    batch = next(iter(t._loader(t.train_set, t.sampler, drop_last=True)))
    batch["images"][:] = float("nan")
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    assert t.train_step(batch)["skipped"] and t.train_step(batch)["skipped"]
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        t.train_step(batch)


def test_training_set_smaller_than_two_is_refused(tmp_path, toy):
    train, val, _ = toy
    with pytest.raises(ValueError, match="at least 2"):
        Pretrainer(get_config("smoke"), torch.utils.data.Subset(train, [0]), val, tmp_path, progress=False)


class PlainStudies(torch.utils.data.Dataset):
    """The interface the loop needs, with nothing toy about it: tensors, token ids and text."""

    def __init__(self, n, size=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = [{"images": torch.rand(1 + i % 4, 1, size, size, generator=g),
                       "report_ids": [1, *torch.randint(5, 100, (3 + i % 5,), generator=g).tolist(), 2],
                       "text": f"report number {i}"} for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_any_plain_dataset_of_studies_trains(tmp_path):
    cfg = get_config("smoke", {"train": {"max_steps": 3}})
    res = pretrain(cfg, tmp_path, train_set=PlainStudies(10), val_set=PlainStudies(4, seed=1), progress=False)
    assert res.step == 3 and res.best_checkpoint is not None


def test_pretraining_on_a_source_domain_folder_augments_flips_and_resumes_exactly(tmp_path):
    """data.source="source": uint8 films from the image cache, augmented on the device, flipped with the
    report's sides swapped; a killed run resumes to the same weights (the augmentation RNG is saved too)."""
    from refers_lite.data.loading.source_studies import write_placeholder_source
    root = write_placeholder_source(tmp_path / "source", n_studies=40, image_size=48, seed=0)
    cfg = get_config("smoke", {"data": {"source": "source", "root": str(root), "hflip_prob": 0.5},
                               "model": {"vocab_size": 512}, "train": {"max_steps": 6, "ckpt_every": 2}})
    full = pretrain(cfg, tmp_path / "full", progress=False)
    assert full.step == 6 and full.best_checkpoint is not None
    part = pretrain(cfg, tmp_path / "part", progress=False, stop_after=3)
    rest = pretrain(cfg, tmp_path / "part", progress=False)
    a, b = load_checkpoint(full.last_checkpoint)["model"], load_checkpoint(rest.last_checkpoint)["model"]
    assert part.interrupted and all(torch.equal(a[k], b[k]) for k in a)
    # the augmentation is random: another seed gives other weights
    other = pretrain(get_config("smoke", {**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seed": 1}}),
                     tmp_path / "other", progress=False)
    c = load_checkpoint(other.last_checkpoint)["model"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_prepare_augments_uint8_films_and_passes_float_model_inputs(tmp_path):
    cfg = get_config("smoke")
    t = Pretrainer(cfg, *_toy(cfg), tmp_path, progress=False)
    films = torch.randint(0, 256, (2, 3, 1, 40, 40), dtype=torch.uint8)
    out = t.prepare({"images": films}, train=True)["images"]
    assert out.dtype == torch.float32 and out.shape == (2, 3, 1, 32, 32) and 0 <= out.min() and out.max() <= 1
    again = t.prepare({"images": films}, train=True)["images"]
    assert not torch.equal(out, again)  # a new random crop/rotation each time
    evals = [t.prepare({"images": films}, train=False)["images"] for _ in range(2)]
    assert torch.equal(*evals)  # evaluation is deterministic
    ready = torch.rand(2, 3, 1, 32, 32)
    assert t.prepare({"images": ready}, train=True)["images"] is ready  # toy studies at model size: untouched


def test_a_rejected_resume_leaves_the_folder_as_it_was(tmp_path):
    """The folder's config.json (and report tokenizer, log) still describe the run that is in it."""
    pretrain(get_config("smoke"), tmp_path, progress=False, stop_after=2)
    files = ("config.json", "report_tokenizer.json", "metrics.jsonl", "last.pt")
    before = {f: (tmp_path / f).read_bytes() for f in files}
    for changed in ({"train": {"lr_vision": 0.5}}, {"data": {"seed": 1}}):  # data.seed: another toy tokenizer
        with pytest.raises(CheckpointError, match="differs in"):
            pretrain(get_config("smoke", changed), tmp_path, progress=False)
        assert {f: (tmp_path / f).read_bytes() for f in files} == before, changed


def test_resume_drops_a_log_line_cut_short_by_a_kill(tmp_path):
    cfg = get_config("smoke")
    pretrain(cfg, tmp_path, progress=False, stop_after=5)
    log = tmp_path / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 6, "epoch')  # killed while writing step 6's record
    with pytest.warns(UserWarning, match=r"metrics.jsonl, line \d+: dropping a half-written last line"):
        res = pretrain(cfg, tmp_path, progress=False)
    assert res.step == cfg.train.max_steps
    steps = [json.loads(ln)["step"] for ln in log.read_text().splitlines() if "loss" in json.loads(ln)]
    assert steps == sorted(set(steps)) and steps[-1] == cfg.train.max_steps


def test_resume_names_a_corrupt_log_line(tmp_path):
    cfg = get_config("smoke")
    pretrain(cfg, tmp_path, progress=False, stop_after=5)
    log = tmp_path / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not JSON"):
        pretrain(cfg, tmp_path, progress=False)


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "afile").write_text("notes")
    with pytest.raises(ValueError, match="afile: exists and is not a folder"):
        pretrain(get_config("smoke"), tmp_path / "afile", progress=False)
    assert (tmp_path / "afile").read_text() == "notes"


def test_a_diverged_run_is_an_error_that_names_the_settings(tmp_path):
    from refers_lite.training.pretrain import TrainingDiverged
    cfg = get_config("smoke", {"train": {"lr_vision": 1e6, "lr_text": 1e6}})
    with pytest.raises(TrainingDiverged, match=r"diverged: no finite validation loss.*train\.lr_vision"):
        pretrain(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "metrics.jsonl").is_file()
    with pytest.raises(TrainingDiverged):  # resuming the finished run says so again, it does not pass as done
        pretrain(cfg, tmp_path / "run", progress=False)


def test_a_run_without_last_pt_never_replaces_an_earlier_runs_results(tmp_path):
    cfg = get_config("smoke")
    run = tmp_path / "run"
    pretrain(cfg, run, progress=False)
    (run / "last.pt").unlink()  # lost, or never there (a fine-tuning folder)
    before = {n: (run / n).read_bytes() for n in ("best.pt", "metrics.jsonl", "config.json", "report_tokenizer.json")}
    with pytest.raises(ValueError, match=r"holds an earlier run's best\.pt, summary\.json but no last\.pt.*--no-resume"):
        pretrain(cfg, run, progress=False)
    assert {n: (run / n).read_bytes() for n in before} == before  # nothing touched
    res = pretrain(cfg, run, resume=False, progress=False)  # said explicitly: start afresh here
    assert res.step == cfg.train.max_steps and (run / "last.pt").is_file()


@pytest.mark.slow
def test_sigterm_saves_last_pt_like_ctrl_c(tmp_path):
    """Issue 18 (#15): `kill` (SIGTERM) of `refers-lite pretrain` saves last.pt and exits 130, as Ctrl-C does;
    the steps since the last periodic checkpoint are not lost."""
    import os
    import signal
    import subprocess
    import sys
    import time
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "refers_lite", "pretrain", "--profile", "smoke", "--out", str(out),
                             "--no-progress", "--set", "train.max_steps=100000", "--set", "train.ckpt_every=100000",
                             "--set", "train.val_every=100000", "--set", "data.num_studies=400"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").is_file():
        time.sleep(0.2)
    time.sleep(1.0)  # a few steps past the first log record
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted at step" in output
    step = load_checkpoint(out / "last.pt")["step"]
    logged = max(json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines())
    assert step >= logged >= 2  # saved where it stopped, not at a periodic checkpoint (there was none)


def test_temp_files_of_a_killed_save_are_removed_on_resume(tmp_path):
    cfg = get_config("smoke")
    pretrain(cfg, tmp_path, progress=False, stop_after=2)
    stale = [tmp_path / "last.pt.k3j2x9.tmp", tmp_path / ".summary.json.4242.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    pretrain(cfg, tmp_path, progress=False)
    assert not any(p.exists() for p in stale) and (tmp_path / "best.pt").is_file()


def test_resume_says_when_the_augmentation_state_cannot_be_restored(tmp_path):
    """Issue 17: a last.pt whose augmentation generator state this device cannot take (written on another device
    type) resumes with fresh augmentation draws and says so, as MoCo's resume does (it used to pass silently)."""
    cfg = get_config("smoke", {"train": {"max_steps": 2, "ckpt_every": 2}})
    pretrain(cfg, tmp_path, progress=False)
    path = tmp_path / "last.pt"
    ckpt = torch.load(path, weights_only=True)
    [state] = ckpt["rng"]  # one process
    assert "augment" in state
    state["augment"] = torch.zeros(3, dtype=torch.uint8)  # not a CPU generator's state
    torch.save(ckpt, path)
    t = Pretrainer(cfg, *_toy(cfg), tmp_path, progress=False)
    with pytest.warns(UserWarning, match="augmentation generator from another device"):
        t.resume(path)
    assert t.step == 2
