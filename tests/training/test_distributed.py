"""Multi-process pretraining (DDP over gloo on the CPU, 2 processes): the same weights as one process.

The workers are started with ``torch.multiprocessing.spawn`` and join the job through the same environment
variables torchrun sets; each builds the tiny in-memory datasets of ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from arkx.config import ArkConfig
from arkx.data.loaders import PreparedDataset, SeededShuffle
from arkx.data.records import Task
from arkx.data.sharding import ShardedBatches, slice_bounds, slice_weight
from arkx.errors import ArkxValueError
from arkx.training.distributed import RanksOutOfSync, check_in_sync, from_environment
from arkx.training.engine import Engine

from ..conftest import MemoryImages, learnable_images, make_records, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

HEADS = [Task("alpha", "multilabel", ("a1", "a2", "a3")), Task("beta", "multiclass", ("b1", "b2"))]


# ---------------------------------------------------------------------------- sharding
def test_slices_cover_each_global_batch_in_order():
    for total in (7, 8, 9):
        for world in (1, 2, 3):
            bounds = [slice_bounds(total, world, r) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1
            weighted = sum(slice_weight(s, total, world) * s / sum(sizes) for s in sizes)
            assert sum(slice_weight(s, total, world) for s in sizes) / world == pytest.approx(1.0)
            assert weighted > 0


def test_ranks_see_the_single_process_batches():
    sampler = SeededShuffle(23)
    sampler.set_seed(5)
    single = list(torch.utils.data.BatchSampler(sampler, 7, drop_last=True))
    shards = [ShardedBatches(sampler, 7, True, rank, 2) for rank in range(2)]
    assert [len(s) for s in shards] == [len(single)] * 2
    joined = [a + b for a, b in zip(*[list(s) for s in shards])]
    assert joined == single
    assert [len(b) for b in next(zip(*[iter(s) for s in shards]))] == [4, 3]
    assert shards[0].global_size(0) == 7
    # no drop_last (a split smaller than one batch): one short global batch
    short = ShardedBatches(sampler, 32, False, 1, 2)
    assert len(short) == 1 and short.global_size(0) == 23 and len(next(iter(short))) == 11


def test_a_batch_smaller_than_the_job_is_refused():
    with pytest.raises(ArkxValueError, match="batch_size 1 is smaller than the number of processes 2"):
        ShardedBatches(SeededShuffle(10), 1, True, 0, 2)


# ---------------------------------------------------------------------------- 2 processes vs 1
def _datasets() -> dict[str, PreparedDataset]:
    out = {}
    for k, (name, labels, kind) in enumerate([("alpha", ("a1", "a2", "a3"), "multilabel"),
                                               ("beta", ("b1", "b2"), "multiclass")]):
        rec = make_records(name, 40, labels, seed=k, kind=kind)
        if kind == "multilabel":  # unlabelled entries: the loss is a mean over the labelled ones
            rec.labels[::3, 1] = np.nan
            rec.labels[1::4, 2] = np.nan
        out[name] = PreparedDataset(name=name, records=rec, images=MemoryImages(learnable_images(rec, 36, k)))
    return out


def _cfg(out, batch_size=7, **training) -> ArkConfig:
    t = dict(rounds=2, optimizer="adamw", lr=3e-3, warmup_rounds=1, max_iters_per_epoch=3)
    t.update(training)
    return ArkConfig.model_validate(dict(
        run=dict(out=str(out), seed=7, device="cpu"),
        datasets=[dict(type="chexpert", root=".", name="alpha"), dict(type="rsna", root=".", name="beta")],
        data=dict(image_size=32, cache_size=36, batch_size=batch_size, eval_batch_size=16, workers=0),
        training=t,
        eval=dict(every="round", splits=["val"]),
    ))


def _model(seed: int):
    # no stochastic depth: its draws inside the model come from one stream per rank (documented), which
    # would make the comparison statistical instead of exact up to float reduction order
    return tiny_model(HEADS, seed=seed, drop_path_rate=0.0)


def _train(cfg: ArkConfig, job=None) -> Engine:
    kwargs = {} if job is None else dict(dist=job)
    engine = Engine(cfg, _datasets(), _model(cfg.run.seed), cfg.run.out, progress=False, **kwargs)
    engine.summary = engine.run()
    return engine


def _join(rank: int, world: int, port: int):
    """Join a gloo job of ``world`` processes as rank ``rank``, through the variables torchrun sets."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return from_environment("cpu")


def _worker(rank: int, world: int, port: int, out: str, cfg_kwargs: dict) -> None:
    job = _join(rank, world, port)
    try:
        engine = _train(_cfg(out, **cfg_kwargs), job)
        state = dict(student=engine.student.state_dict(), teacher=engine.teacher.state_dict(),
                     final=engine.summary.final, images_seen=engine.images_seen)
        torch.save(state, os.path.join(out, f"rank{rank}.pt"))
    finally:
        job.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(out, **cfg_kwargs) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(2, _free_port(), str(out), cfg_kwargs), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("mode", ["cyclic", "concurrent"])
def test_two_processes_train_the_weights_of_one(tmp_path, mode):
    """A global batch of 7 split 4 + 3 over two ranks: the same weights as one process within 5e-5 (float
    reduction order), identical on both ranks, the same evaluation, one metrics file."""
    ranks = _two_processes(tmp_path / "ddp", mode=mode)
    single = _train(_cfg(tmp_path / "single", mode=mode))
    for which in ("student", "teacher"):
        assert _max_difference(ranks[0][which], ranks[1][which]) == 0.0  # the ranks hold the same model
        diff = _max_difference(ranks[0][which], getattr(single, which).state_dict())
        assert diff < 5e-5, f"{which} differs from one process by {diff}"
    # the teacher moved away from its start (the comparison above is not between untouched models)
    start = _model(7).state_dict()
    assert _max_difference(ranks[0]["teacher"], start) > 1e-3
    # the job's count of images, whatever its size (a resume with another number of processes continues it)
    assert ranks[0]["images_seen"] == ranks[1]["images_seen"] == single.images_seen
    # the gathered evaluation scores the whole split as one process does
    for model in single.summary.final:
        for name, auc in single.summary.final[model].items():
            assert ranks[1]["final"][model][name] == pytest.approx(auc, abs=1e-4)
    assert (tmp_path / "ddp" / "metrics.csv").is_file()
    assert (tmp_path / "ddp" / "checkpoints" / "last.pt").is_file()
    metrics = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == len((tmp_path / "single" / "metrics.csv").read_text().splitlines())


def _diverged_worker(rank: int, world: int, port: int, out: str) -> None:
    job = _join(rank, world, port)
    try:
        model = torch.nn.Linear(3, 2)
        torch.nn.init.constant_(model.weight, 0.5)
        torch.nn.init.constant_(model.bias, 0.25)
        check_in_sync({"student": model}, job, "step 0")  # equal weights pass
        with torch.no_grad():
            model.bias[1] += 1e-6 * rank  # one element on one rank
        try:
            check_in_sync({"student": model}, job, "step 1")
            verdict = "passed"
        except RanksOutOfSync as err:
            verdict = str(err)
        Path(out, f"rank{rank}.txt").write_text(verdict)
    finally:
        job.close()


def test_ranks_whose_weights_differ_stop_the_run(tmp_path):
    mp.spawn(_diverged_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        verdict = (tmp_path / f"rank{rank}.txt").read_text()
        assert verdict.startswith("after step 1 the student's weights differ between ranks"), verdict
