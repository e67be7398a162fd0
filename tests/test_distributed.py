"""DDP on the CPU: 2 gloo processes must compute what 1 process computes on the combined batch.

The processes are started with ``torch.multiprocessing.spawn`` and meet through a file in the
test's tmp folder (no ports, so parallel test workers never collide); each writes what it
measured to a file that the test compares with a single-process run in the test's own process.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from refers_lite.config import get_config
from refers_lite.data.loading.toy import build_toy_datasets
from refers_lite.training.distributed import gather_with_grad, mean_over_ranks
from refers_lite.losses import consistency_loss, language_model_loss
from refers_lite.models import REFERS
from refers_lite.training.pretrain import Pretrainer

W = 2  # processes
B = 3  # studies per process in the loss tests


def _run(fn, tmp: Path, *args) -> None:
    def_path = tmp / "rendezvous"
    mp.spawn(_entry, args=(fn, str(def_path), args), nprocs=W, join=True)


def _entry(r: int, fn, rendezvous: str, args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=r, world_size=W)
    try:
        fn(r, *args)
    finally:
        dist.destroy_process_group()


# -- the losses over the global batch -----------------------------------------------------------------


def _features(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(W * B, 16, generator=g)
    t = torch.randn(W * B, 16, generator=g)
    logits = torch.randn(W * B, 5, 11, generator=g)
    targets = torch.randint(1, 11, (W * B, 5), generator=g)
    targets[0, 3:] = 0  # padding: reports of different lengths on the two ranks
    targets[W * B - 1, 1:] = 0
    return v, t, logits, targets


def _loss_worker(r: int, out: str) -> None:
    v, t, logits, targets = (x[r * B:(r + 1) * B].clone() for x in _features())
    v.requires_grad_(True), t.requires_grad_(True), logits.requires_grad_(True)
    con = consistency_loss(v, t, 0.1, gather=True)
    gen = language_model_loss(logits, targets, pad_id=0, gather=True)
    (con + gen).backward()
    gathered = gather_with_grad(v.detach())
    stats = mean_over_ranks({"con": float(con), "gen": float(gen)})
    torch.save({"stats": stats, "gv": v.grad, "gt": t.grad, "gl": logits.grad, "gathered": gathered},
               f"{out}.{r}")


@pytest.mark.slow
def test_losses_over_the_global_batch_match_one_process(tmp_path):
    _run(_loss_worker, tmp_path, str(tmp_path / "loss"))
    v, t, logits, targets = _features()
    v.requires_grad_(True), t.requires_grad_(True), logits.requires_grad_(True)
    con = consistency_loss(v, t, 0.1)
    gen = language_model_loss(logits, targets, pad_id=0)
    (con + gen).backward()
    con, gen = con.detach(), gen.detach()
    for r in range(W):
        got = torch.load(tmp_path / f"loss.{r}")
        assert got["stats"]["con"] == pytest.approx(float(con), rel=1e-5)  # global negatives
        assert got["stats"]["gen"] == pytest.approx(float(gen), rel=1e-5)  # global token mean
        torch.testing.assert_close(got["gathered"], v.detach())  # rank order
        rows = slice(r * B, (r + 1) * B)
        # DDP divides the summed gradient by W: rank r's gradient / W is the single-process gradient
        torch.testing.assert_close(got["gv"] / W, v.grad[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["gt"] / W, t.grad[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(got["gl"] / W, logits.grad[rows], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_a_negative_on_another_rank_still_gets_its_gradient(tmp_path):
    """Rank 0's studies are negatives in rank 1's rows. With a gather that passed no gradient back, rank 0
    would get only the gradient of its own loss: what the 2-process run got must differ from that."""
    _run(_loss_worker, tmp_path, str(tmp_path / "loss"))
    v, t, *_ = _features()
    vr = v[:B].clone().requires_grad_(True)  # rank 0's study features
    v_all, t_all = torch.cat([vr, v[B:]]), t  # rank 1's rows as constants (a gather without gradient)
    norm = nn.functional.normalize
    labels = torch.arange(B)
    own = 0.5 * (nn.functional.cross_entropy(norm(vr, dim=-1) @ norm(t_all, dim=-1).t() / 0.1, labels)
                 + nn.functional.cross_entropy(norm(t[:B], dim=-1) @ norm(v_all, dim=-1).t() / 0.1, labels))
    own_only, = torch.autograd.grad(own, vr)
    got = torch.load(tmp_path / "loss.0")["gv"]
    assert not torch.allclose(got, own_only, rtol=1e-3, atol=1e-6)


# -- training -----------------------------------------------------------------------------------------


def _cfg():
    return get_config("smoke", {"model": {"decoder_dropout": 0.0}, "train": {"batch_size": 4, "max_steps": 6,
                                                                         "ckpt_every": 2}})


def _model(cfg) -> REFERS:
    torch.manual_seed(0)
    model = REFERS.from_config(cfg)
    for m in model.modules():  # BERT's dropout too: equal runs need no randomness in the model
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def _train(cfg, out: Path, stop_after: int | None = None) -> Pretrainer:
    train_set, val_set, _ = build_toy_datasets(cfg)
    trainer = Pretrainer(cfg, train_set, val_set, out, model=_model(cfg), progress=False)
    trainer.fit(stop_after=stop_after)
    return trainer


def _train_worker(r: int, root: str) -> None:
    cfg = _cfg()
    root = Path(root)
    straight = _train(cfg, root / "ddp")
    _train(cfg, root / "ddp_killed", stop_after=3)  # killed after 3 steps (last.pt written) ...
    resumed = _train(cfg, root / "ddp_killed")  # ... and resumed by new processes
    if r == 0:
        torch.save({"straight": straight.module.state_dict(), "resumed": resumed.module.state_dict(),
                    "batch": straight.batch_size, "steps": straight.step}, root / "ddp_result.pt")


@pytest.mark.slow
def test_ddp_equals_one_process_on_the_combined_batch_and_resumes(tmp_path):
    _run(_train_worker, tmp_path, str(tmp_path))
    got = torch.load(tmp_path / "ddp_result.pt")
    assert got["batch"] == 2 and got["steps"] == 6  # 2 studies per process, global batch 4
    single = _train(_cfg(), tmp_path / "single")
    assert single.batch_size == 4
    ref = single.module.state_dict()
    moved = 0
    for k, v in ref.items():
        torch.testing.assert_close(got["straight"][k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: {m}")
        torch.testing.assert_close(got["resumed"][k], got["straight"][k], rtol=0, atol=0, msg=lambda m: f"{k}: {m}")
        moved += int(not torch.equal(v, _model(_cfg()).state_dict()[k]))
    assert moved > len(ref) // 2  # training changed the weights: the comparison is not of two untouched inits
    # rank 0 alone wrote the log; the logged losses are the global batch's, equal to one process's
    lines = [ln for ln in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    single_lines = (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()
    import json
    a = [json.loads(x) for x in lines if "loss" in json.loads(x)]
    b = [json.loads(x) for x in single_lines if "loss" in json.loads(x)]
    assert [x["step"] for x in a] == [x["step"] for x in b]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
