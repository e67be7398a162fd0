"""Our MoCo v2-style baseline (refers_lite.baselines.moco): smoke-sized model, placeholder source domain."""
import json

import pytest
import torch
import torch.nn.functional as F

from refers_lite.baselines import pretrain_moco
from refers_lite.baselines import moco as moco_mod
from refers_lite.data.loading.source_studies import SourceRadiographs
from refers_lite.baselines.moco import MoCo, MoCoPretrainer, build_optimizer
from refers_lite.training.checkpoint import ENCODER_FORMAT, CheckpointError, load_checkpoint, load_image_encoder
from refers_lite.config import get_config
from refers_lite.data.loading.gpu_augment import StudyAugment
from refers_lite.data.loading.source_studies import SourceStudies, write_placeholder_source
from refers_lite.models.radiograph_transformer import RadiographTransformer
from refers_lite.training.runtime import seed_everything

RUN = dict(steps=6, batch_size=8, lr=3e-2, queue_size=4096, seed=0, device="cpu", precision="fp32", progress=False)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_placeholder_source(tmp_path_factory.mktemp("moco") / "source", n_studies=24, image_size=48, seed=0)


@pytest.fixture(scope="module")
def finished(source, tmp_path_factory):
    """One uninterrupted 6-step run: (out_dir, encoder path)."""
    out = tmp_path_factory.mktemp("moco_run")
    return out, pretrain_moco("smoke", source, out, **RUN)


def test_radiographs_are_every_image_of_the_split(source):
    images = SourceRadiographs(source, "train")
    studies = SourceStudies(source, "train")
    flat = torch.cat([studies[i]["images"] for i in range(len(studies))])  # (n_images, 1, S, S)
    assert len(images) == len(flat) == studies.n_images
    assert images[0]["image"].shape == (1, 48, 48) and images[0]["image"].dtype == torch.uint8
    assert torch.equal(images.batch(range(len(images))), flat)
    assert torch.equal(images[-1]["image"], flat[-1]) and images[-1]["index"] == len(images) - 1


def test_radiographs_of_every_render_served(tmp_path):
    root = write_placeholder_source(tmp_path / "source", n_studies=12, image_size=32, seed=0, renders=2)
    one, two = SourceRadiographs(root, "train"), SourceRadiographs(root, "train", renders=2)
    studies = SourceStudies(root, "train", renders=2)
    flat = torch.cat([studies[i]["images"] for i in range(len(studies))])  # render 0's films, then render 1's
    assert len(two) == 2 * len(one) == len(flat) and two.n_studies == one.n_studies == studies.n_studies
    assert torch.equal(two.batch(range(len(two))), flat) and torch.equal(one.batch(range(len(one))), flat[:len(one)])
    assert two.fingerprint != one.fingerprint  # a run over other films is another run


def test_exported_encoder_is_the_trained_query_encoder(finished):
    out, path = finished
    assert path == out / "encoder.pt"
    ckpt = load_checkpoint(path, ENCODER_FORMAT)
    assert ckpt["method"] == "moco_v2" and ckpt["step"] == RUN["steps"]
    enc = load_image_encoder(path)  # strict
    assert isinstance(enc, RadiographTransformer) and enc.width == get_config("smoke").model.width
    trained = {k[len("encoder."):]: v for k, v in load_checkpoint(out / "last.pt")["model"].items()
               if k.startswith("encoder.")}
    loaded = enc.state_dict()
    assert trained.keys() == loaded.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in loaded)
    seed_everything(RUN["seed"])  # the run's initial weights
    fresh = RadiographTransformer.from_config(get_config("smoke").model).state_dict()
    changed = [k for k in loaded if not torch.equal(loaded[k], fresh[k])]
    assert "patch_embed.proj.weight" in changed and "blocks.1.attn.qkv.weight" in changed
    recs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4, 6] and all({"loss", "lr"} <= set(r) for r in recs)


def test_key_encoder_follows_the_momentum_rule(source, tmp_path):
    m = 0.9
    tr = MoCoPretrainer(get_config("smoke"), SourceRadiographs(source), tmp_path, steps=4, batch_size=8, lr=0.1,
                        momentum=m, device="cpu", precision="fp32", progress=False)
    model = tr.model
    assert all(not p.requires_grad for p in model.key_parameters())
    opt_params = {id(p) for g in tr.opt.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in model.query_parameters()}
    no_decay = next(g for g in tr.opt.param_groups if g["name"] == "no_decay")
    assert no_decay["weight_decay"] == 0 and all(p.ndim < 2 for p in no_decay["params"])
    k_old = [p.detach().clone() for p in model.key_parameters()]
    assert all(torch.equal(k, q) for k, q in zip(k_old, model.query_parameters()))  # starts as a copy
    tr.train_step()
    q_new = [p.detach() for p in model.query_parameters()]
    k_new = [p.detach() for p in model.key_parameters()]
    moved = max((q - k).abs().max().item() for q, k in zip(q_new, k_old))
    assert moved > 1e-4  # the query moved, so the rule is not checked on equal tensors
    for ko, kn, qn in zip(k_old, k_new, q_new):
        torch.testing.assert_close(kn, m * ko + (1 - m) * qn, rtol=1e-6, atol=1e-7)  # float rounding
    assert all(p.grad is None for p in model.key_parameters())


def test_queue_holds_normalised_keys_and_wraps():
    torch.manual_seed(0)
    model = MoCo.from_config(get_config("smoke").model, queue_size=10)
    assert model.queue.shape == (10, 128)
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(10))  # MoCo's random start: unit rows
    x = [torch.rand(4, 1, 32, 32) for _ in range(3)]
    out1 = model(x[0], x[0].flip(-1))
    assert out1.logits.shape == (4, 1 + 10)
    torch.testing.assert_close(out1.logits[:, 0], (out1.queries * out1.keys).sum(1) / 0.2)  # positive first
    assert torch.equal(model.queue[:4], out1.keys) and model.queue_ptr.item() == 4
    queue_before = model.queue.clone()
    out2 = model(x[1], x[1])
    # the negatives are the queue before this batch's keys were pushed
    torch.testing.assert_close(out2.logits[:, 1:], out2.queries @ queue_before.t() / 0.2)
    out3 = model(x[2], x[2])  # rows 8, 9, then 0, 1: the pointer wraps
    assert model.queue_ptr.item() == 2
    assert torch.equal(model.queue[8:10], out3.keys[:2]) and torch.equal(model.queue[0:2], out3.keys[2:])
    assert torch.equal(model.queue[4:8], out2.keys) and torch.equal(model.queue[2:4], out1.keys[2:])
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(10))
    expected = torch.cat([out3.keys[2:], out1.keys[2:], out2.keys, out3.keys[:2]])
    assert torch.equal(model.queue, expected)


def test_queue_is_clamped_to_the_other_images(source, tmp_path):
    data = SourceRadiographs(source)
    tr = MoCoPretrainer(get_config("smoke"), data, tmp_path, steps=2, batch_size=8, device="cpu", precision="fp32",
                        progress=False)
    assert tr.queue_size == tr.model.queue_size == len(data) - 8


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adamw", 3e-3)])
def test_training_reduces_the_loss_on_a_fixed_batch(source, optimizer, lr):
    """30 steps (SGD, or AdamW as the course profiles give MoCo) on one batch of 16 radiographs (two fixed
    views), against a fixed queue of the keys of the other radiographs of the source. The loss is compared
    with its value at step 0 (~log(1 + K): the smoke transformer's features start nearly identical). What
    this shows: gradients reach the query encoder and the optimiser lowers InfoNCE with the positive in
    column 0. What it does not: that 30 smoke-sized steps give discriminative features (they do not: see
    "What to expect at small scale" in the module docstring)."""
    data = SourceRadiographs(source, None)
    torch.manual_seed(0)
    model = MoCo.from_config(get_config("smoke").model, queue_size=len(data) - 16)
    g = torch.Generator().manual_seed(0)
    aug = StudyAugment(32)
    x = data.batch(range(16))
    v1, v2 = aug(x, True, g), aug(x, True, g)  # (16, 1, 32, 32) each
    model.enqueue(model.key(aug(data.batch(range(16, len(data))), True, g)))  # fills the whole queue
    opt = build_optimizer(model, lr=lr, momentum=0.9, weight_decay=1e-4, optimizer=optimizer)
    assert type(opt) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[optimizer]
    losses = []
    for _ in range(30):
        out = model(v1, v2, enqueue=False)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        model.momentum_update()
        losses.append(out.loss.item())
    out = model(v1, v2, enqueue=False)
    assert losses[0] == pytest.approx(torch.log(torch.tensor(1.0 + model.queue_size)).item(), abs=0.05)
    assert out.loss.item() < 0.7 * losses[0]
    assert (out.logits.argmax(dim=1) == 0).all()  # every positive beats every negative


def test_killed_run_resumes_to_the_uninterrupted_weights(source, finished, tmp_path):
    ref_out, ref = finished
    first = pretrain_moco("smoke", source, tmp_path, stop_after=3, **RUN)
    assert first == tmp_path / "last.pt" and not (tmp_path / "encoder.pt").exists()
    assert load_checkpoint(first)["step"] == 3
    with pytest.raises(CheckpointError, match=r"steps \(6 there, 8 now\)"):
        pretrain_moco("smoke", source, tmp_path, **{**RUN, "steps": 8})
    with pytest.raises(CheckpointError, match="lr"):
        pretrain_moco("smoke", source, tmp_path, **{**RUN, "lr": 0.1})
    resumed = pretrain_moco("smoke", source, tmp_path, **RUN)
    assert resumed == tmp_path / "encoder.pt"
    a, b = load_checkpoint(ref)["state_dict"], load_checkpoint(resumed)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, lb = load_checkpoint(ref_out / "last.pt")["model"], load_checkpoint(tmp_path / "last.pt")["model"]
    assert all(torch.equal(la[k], lb[k]) for k in la)  # key encoder, head, queue and its pointer too

    def losses(d):
        return [(r["step"], r["loss"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
    assert losses(tmp_path) == losses(ref_out)


def test_a_finished_run_is_returned_without_training(source, finished, monkeypatch):
    out, path = finished
    before = path.stat().st_mtime_ns, (out / "metrics.jsonl").read_text()

    def no_training(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(moco_mod, "MoCoPretrainer", no_training)
    assert pretrain_moco("smoke", source, out, **RUN) == path
    assert (path.stat().st_mtime_ns, (out / "metrics.jsonl").read_text()) == before
    with pytest.raises(CheckpointError, match="other settings"):
        pretrain_moco("smoke", source, out, **{**RUN, "temperature": 0.1})


def test_the_optimizer_is_checked_decays_only_matrices_and_decides_the_run(source, finished, tmp_path):
    model = MoCo.from_config(get_config("smoke").model, queue_size=16)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(model, lr=1e-3, optimizer="adam")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        pretrain_moco("smoke", source, tmp_path / "bad", optimizer="lamb", **RUN)
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    opt = build_optimizer(model, lr=1e-3, momentum=0.9, weight_decay=0.05, optimizer="adamw")
    decay, no_decay = opt.param_groups
    assert opt.defaults["betas"] == (0.9, 0.999) and (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len([p for p in model.query_parameters()])
    # a run's optimizer is one of its settings: an SGD run is not resumed or reused as an AdamW one
    out, _ = finished
    with pytest.raises(CheckpointError, match="optimizer"):
        pretrain_moco("smoke", source, out, optimizer="adamw", **RUN)
    adamw = pretrain_moco("smoke", source, tmp_path / "adamw", optimizer="adamw", **{**RUN, "steps": 2})
    assert load_checkpoint(adamw)["settings"]["optimizer"] == "adamw"
    assert "optimizer" not in load_checkpoint(finished[1])["settings"]  # SGD runs keep their former settings


def test_features_are_l2_normalised():
    torch.manual_seed(0)
    model = MoCo.from_config(get_config("smoke").model, queue_size=8)
    x = torch.rand(3, 1, 32, 32)
    q, k = model.query(x), model.key(x)
    torch.testing.assert_close(q, k)  # the key encoder starts as a copy
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
    assert F.cross_entropy(model(x, x).logits, torch.zeros(3, dtype=torch.long)).requires_grad
