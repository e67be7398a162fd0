"""Several GPUs and machines: ``torchrun`` and PyTorch DDP, no home-made launcher.

``torchrun`` starts one process per GPU and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`init_distributed` reads them (NCCL on GPUs, gloo on CPUs) and the training loop does the
rest: every process takes its shard of the studies, DDP averages the gradients, rank 0 alone
logs and writes checkpoints.

Two things REFERS needs beyond plain DDP, so that W processes with B studies each compute the
same loss and gradient as one process with the combined batch of W*B studies:

* Global negatives for study-report consistency (Eq. 2). :func:`gather_with_grad` all-gathers the
  study and report features of every rank, so each rank scores its B studies against all W*B
  reports (and its B reports against all W*B studies). Its backward sums the gradient of every
  rank's loss with respect to each feature and hands each rank the part for its own features
  (the ``open_clip`` pattern with gradient: a feature used as a negative on another rank still
  receives that rank's gradient). Each rank's loss is the mean over its own rows; DDP's average
  over ranks makes it the mean over all W*B rows, which is the single-process loss.
* Report generation (Eq. 1) averaged over the real tokens of the *global* batch: each rank sums
  its token losses and divides by the global token count (one all-reduce of an integer), times W
  because DDP divides gradients by W. Reports differ in length, so a per-rank mean would weigh
  the tokens of short-report ranks more.

``tests/test_distributed.py`` runs 2 gloo processes on the CPU and checks both against a
single process.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(backend: str | None = None, timeout_min: float = 30.0) -> bool:
    """Join the process group ``torchrun`` describes in the environment; False when not under torchrun.

    Backend: NCCL when CUDA is available, else gloo. Each process takes GPU ``LOCAL_RANK``.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: "
                           f"start several processes with torchrun (see the README)")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
    return True


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """(B, ...) on each rank -> (W*B, ...) on every rank, rank order; the backward sums over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.batch = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)  # (W*B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's loss contributes to every feature's gradient
        return grad[ctx.rank * ctx.batch:(ctx.rank + 1) * ctx.batch]  # (B, ...): this rank's features


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` (B, ...) across ranks into (W*B, ...), keeping the gradient path to the local rows.

    Every rank must pass the same B (the training sampler guarantees it). The identity outside DDP.
    """
    if not is_distributed() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks (no gradient); ``x`` itself outside DDP."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def mean_over_ranks(stats: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks (one all-reduce); unchanged outside DDP."""
    if not is_distributed() or world_size() == 1 or not stats:
        return stats
    keys = sorted(stats)
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world_size()).tolist()))


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` outside DDP."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
