"""Multi-GPU and multi-node pretraining with ``torchrun`` (``torch.distributed``, DistributedDataParallel).

``torchrun --nproc-per-node N -m arkx pretrain CONFIG`` runs the same command in N processes; each finds its
rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...) and
:func:`from_environment` joins the process group (NCCL on CUDA, gloo on the CPU). Nothing else changes for
the user: the config means the same with any number of processes.

What makes a run independent of how many processes train it:

- ``data.batch_size`` is the **global** batch. Every rank draws the same seeded permutation of a dataset
  epoch and cuts it into the same global batches; rank ``r`` takes the ``r``-th contiguous slice of each
  (:class:`ShardedBatches`). Every rank therefore runs the same number of iterations of the same schedule
  step (the cyclic schedule stays in lockstep), and the loss of a slice is weighted by its share of the
  global batch (:func:`slice_weight`) so DDP's gradient average is the gradient of the global batch's mean.
- The augmentation of a global batch is drawn once, for all its images, by every rank from the step's seed,
  and each rank keeps its slice's rows: the same parameters as one process would draw.
- The EMA teacher is updated from the (identical) student on every rank; the student's buffers (BatchNorm
  statistics, which each rank updates from its own slice) are broadcast from rank 0 before the update, and
  :func:`check_in_sync` compares a fingerprint of every rank's weights after every step, so ranks that
  drift apart stop the run instead of training silently on.

What differs from one process, by float reduction order only, or by design:

- gradients are averaged in another order (float rounding: the equivalence tests bound the difference);
- BatchNorm normalises each rank's slice with that slice's statistics (as DDP always does); Swin, Ark's
  backbone, has none;
- random draws *inside* the model (dropout, stochastic depth) and the ``lsr-*`` label draws use one stream
  per rank: statistically the same, not the same numbers as one process.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..data.sharding import ShardedBatches, slice_bounds, slice_weight  # noqa: F401  (re-exported)
from ..errors import ArkxRuntimeError, ArkxValueError

log = logging.getLogger("arkx.training")


class RanksOutOfSync(ArkxRuntimeError):
    """The ranks' weights differ after a step: training on would average unrelated models."""


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the job: rank ``rank`` of ``world_size`` (1: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False  # this process joined the group (and leaves it at the end)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device | None:
        """The device of this rank for ``run.device`` ``name`` (``cuda:LOCAL_RANK`` on GPUs), None off DDP."""
        if not self.enabled:
            return None
        if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise ArkxValueError("run.device is 'cuda' but this rank sees no CUDA device")
        return torch.device("cuda", self.local_rank)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this process joined it (after the last collective)."""
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = Distributed()


@contextlib.contextmanager
def rank_zero_first(job: Distributed):
    """Rank 0 runs the block first (e.g. decodes the image cache); the other ranks wait at a barrier and then
    run it (then finding the work done). A no-op in a single-process run."""
    if job.enabled and not job.is_main:
        job.barrier()
    yield
    if job.enabled and job.is_main:
        job.barrier()


#: how long ranks wait for each other (rank 0 decoding a large cache while the others wait included);
#: ``ARKX_DIST_TIMEOUT_MINUTES`` overrides it. Preparing the cache first (``arkx prepare``) keeps waits short.
DEFAULT_TIMEOUT_MINUTES = 180.0


def from_environment(device: str = "auto", timeout_minutes: float | None = None) -> Distributed:
    """The job this process belongs to, from torchrun's environment; joins the process group when
    ``WORLD_SIZE`` > 1 (NCCL for CUDA runs, gloo on the CPU). A plain ``python -m arkx`` is a job of one."""
    if timeout_minutes is None:
        timeout_minutes = float(os.environ.get("ARKX_DIST_TIMEOUT_MINUTES", DEFAULT_TIMEOUT_MINUTES))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ArkxValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch multi-process runs "
                             "with torchrun (e.g. torchrun --nproc-per-node 2 -m arkx pretrain CONFIG)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    initialized_here = False
    if not dist.is_initialized():
        use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
        initialized_here = True
    log.info("rank %d of %d (local rank %d, backend %s)", rank, world, local_rank, dist.get_backend())
    if rank != 0:  # rank 0 reports progress and results; the others only their warnings and errors
        logging.getLogger("arkx").setLevel(max(logging.getLogger("arkx").getEffectiveLevel(), logging.WARNING))
    return Distributed(rank, world, local_rank, initialized_here)


# ---------------------------------------------------------------------------- collectives
def all_mean(value: torch.Tensor, dist_ctx: Distributed) -> torch.Tensor:
    """The mean of ``value`` over ranks (the value itself in a single-process run)."""
    if not dist_ctx.enabled:
        return value
    reduced = value.detach().clone().float()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist_ctx.world_size


def all_sum(value: torch.Tensor, dist_ctx: Distributed) -> torch.Tensor:
    """The sum of ``value`` over ranks, differentiable-free (a new tensor; ``value`` itself off DDP)."""
    if not dist_ctx.enabled:
        return value
    reduced = value.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced


def average_gradients(module: torch.nn.Module, dist_ctx: Distributed) -> None:
    """Every parameter's gradient replaced by its mean over ranks: one all-reduce per dtype over the
    flattened gradients (the ranks run the same step, so the same parameters have gradients on each)."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for parameter in module.parameters():
        if parameter.grad is not None:
            by_dtype.setdefault(parameter.grad.dtype, []).append(parameter.grad)
    for grads in by_dtype.values():
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= dist_ctx.world_size
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)


def gather_objects(obj: Any, dist_ctx: Distributed) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single-process run)."""
    if not dist_ctx.enabled:
        return [obj]
    out: list[Any] = [None] * dist_ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: torch.nn.Module, dist_ctx: Distributed) -> None:
    """Rank 0's floating buffers (BatchNorm running statistics) on every rank."""
    if not dist_ctx.enabled:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.broadcast(buffer.data, src=0)


def fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """Two float64 numbers per module (sum and sum of squares of every parameter and buffer): equal on ranks
    holding the same weights, different (in practice) as soon as one element differs."""
    tensors = [*module.parameters(), *module.buffers()]
    total = torch.zeros(2, dtype=torch.float64, device=tensors[0].device if tensors else None)
    for tensor in tensors:
        values = tensor.detach().double()
        total += torch.stack([values.sum(), (values * values).sum()])
    return total.cpu()  # one transfer


def check_in_sync(models: dict[str, torch.nn.Module], dist_ctx: Distributed, where: str) -> None:
    """Raise :class:`RanksOutOfSync` unless every rank holds the same weights in each of ``models``."""
    if not dist_ctx.enabled:
        return
    mine = {name: fingerprint(model).tolist() for name, model in models.items()}
    everyone = gather_objects(mine, dist_ctx)
    for name in models:
        values = [prints[name] for prints in everyone]
        if any(v != values[0] for v in values[1:]):
            raise RanksOutOfSync(f"after {where} the {name}'s weights differ between ranks ({values}); the run "
                                 "stops rather than average diverged models (the last checkpoint is intact)")


class StudentStep(torch.nn.Module):
    """The module DDP wraps: its forward is the engine's student pass of one batch (head output and the
    features read at the consistency sites), so everything that has a gradient is computed inside DDP's
    forward, whichever head, branch and site the step uses."""

    def __init__(self, student: torch.nn.Module, forward_fn):
        super().__init__()
        self.student = student
        self._forward_fn = forward_fn  # a bound method of the engine: not a module, not registered

    def forward(self, *args: Any) -> Any:
        return self._forward_fn(*args)


def wrap_student(student: torch.nn.Module, forward_fn, device: torch.device) -> torch.nn.Module:
    """``student`` under DistributedDataParallel (with ``find_unused_parameters``: a step trains one
    dataset's head and, in Foundation X, one task's branches; a Lock-Release phase freezes whole groups)."""
    from torch.nn.parallel import DistributedDataParallel

    step = StudentStep(student, forward_fn)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=True)
