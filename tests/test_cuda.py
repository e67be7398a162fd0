"""The CUDA paths: bf16 and fp16 + GradScaler, torch.compile, the fused optimiser, the device-side
augmentation inside the training loop. Skipped without a GPU (CI has none); ``benchmarks/gpu_check.sh``
runs them on a lent GPU."""
from __future__ import annotations

import json
import math

import pytest
import torch

from refers_lite.training.checkpoint import load_checkpoint
from refers_lite.config import get_config
from refers_lite.data.loading.source_studies import write_placeholder_source
from refers_lite.training.pretrain import Pretrainer, pretrain, to_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_placeholder_source(tmp_path_factory.mktemp("src") / "source", n_studies=48, image_size=64, seed=0)


def _cfg(source, **train):
    return get_config("smoke", {"data": {"source": "source", "root": str(source)}, "model": {"vocab_size": 512},
                                "train": {"device": "cuda", "max_steps": 16, "ckpt_every": 8, **train}})


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_training_on_cuda_learns_and_resumes(tmp_path, source, precision):
    cfg = _cfg(source, precision=precision)
    full = pretrain(cfg, tmp_path / "full", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert all(math.isfinite(x) for x in losses)
    assert min(losses[-3:]) < losses[0]  # (8 logged losses; the fp16 scaler skips its first step or two)
    assert sum(r.get("skipped", False) for r in recs) <= 2
    pretrain(cfg, tmp_path / "part", progress=False, stop_after=8)
    rest = pretrain(cfg, tmp_path / "part", progress=False)
    a, b = load_checkpoint(full.last_checkpoint)["model"], load_checkpoint(rest.last_checkpoint)["model"]
    for k in a:  # cuBLAS/cuDNN may pick other kernels after a restart: equal to rounding
        torch.testing.assert_close(b[k], a[k], rtol=2e-2, atol=2e-3, msg=lambda m: f"{k}: {m}")


def test_compiled_step_matches_eager(tmp_path, source):
    eager = Pretrainer(_cfg(source, precision="fp32"), *_sets(source), tmp_path / "e", progress=False)
    compiled = Pretrainer(_cfg(source, precision="fp32", compile=True), *_sets(source), tmp_path / "c",
                          progress=False)
    batch = next(iter(eager._loader(eager.train_set, eager.sampler, drop_last=True)))
    for t in (eager, compiled):  # the same augmentation draws
        t.aug_generator.manual_seed(0)
    a = eager.train_step(to_device(batch, eager.device))
    b = compiled.train_step(to_device(batch, compiled.device))
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
    assert isinstance(compiled.opt, torch.optim.SGD) and compiled.opt.param_groups[0]["fused"]


def _sets(source):
    from refers_lite.data.loading.source_studies import SourceStudies
    train = SourceStudies(source, "train")
    return train, SourceStudies(source, "validation", report_tokenizer=train.report_tokenizer)
