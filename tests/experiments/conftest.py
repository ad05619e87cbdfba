"""Shared fixtures of the experiment tests: tiny synthetic datasets and a base config that trains in ~1 s."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import arkx


@pytest.fixture(scope="module")
def tiny_roots(tmp_path_factory):
    return arkx.synthesize(tmp_path_factory.mktemp("synth"), seed=5, n=40, size=32, datasets=["chexpert", "shenzhen"])


def tiny_config(roots: dict, out: Path, datasets=("chexpert", "shenzhen")) -> dict:
    """resnet10t at 32 px, one round of at most 2 iterations per dataset: a run takes about a second."""
    return dict(
        run=dict(out=str(out / "unused"), seed=0, device="cpu"),
        datasets=[dict(type=name, root=str(roots[name])) for name in datasets],
        data=dict(image_size=32, cache_size=36, batch_size=8, eval_batch_size=64, workers=0, prepare_workers=0),
        model=dict(backbone="resnet10t", projector="linear", projector_dim=16),
        training=dict(rounds=1, optimizer="adamw", lr=2e-3, warmup_rounds=0.5, max_iters_per_epoch=2,
                      ema=dict(momentum_start=0.5, momentum_end=0.9), consistency=dict(weight=0.2)),
        eval=dict(every="end", splits=["val"], models=["teacher"]),
    )


def write_tiny_config(roots: dict, path: Path, datasets=("chexpert", "shenzhen"), **changes) -> Path:
    raw = tiny_config(roots, path.parent, datasets)
    for section, values in changes.items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw))
    return path
