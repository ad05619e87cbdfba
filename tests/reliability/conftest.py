"""Shared helpers of the fault-injection suite: pristine synthetic datasets (written once per session,
copied before a test damages them) and a tiny config that pretrains in about a second per step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import arkx
from arkx.demo import TINY_SWIN

SMALL_SWIN = dict(TINY_SWIN, embed_dim=16, img_size=32)
DATASETS = ("chexpert", "shenzhen", "rsna")


@pytest.fixture(scope="session")
def pristine_roots(tmp_path_factory) -> dict[str, Path]:
    """Synthetic chexpert / shenzhen / rsna folders in their official layouts. Never modify them."""
    out = tmp_path_factory.mktemp("reliability-synth")
    return arkx.synthesize(out, seed=5, n=60, size=40, datasets=list(DATASETS))


@pytest.fixture
def roots(pristine_roots, tmp_path) -> dict[str, Path]:
    """A private copy of the synthetic datasets that a test may damage."""
    out = {}
    for name, root in pristine_roots.items():
        out[name] = tmp_path / "data" / name
        shutil.copytree(root, out[name])
    return out


def tiny_config(roots: dict[str, Path], out: Path, datasets=("shenzhen", "rsna"), rounds: int = 2,
                **sections) -> dict:
    """A run of ``rounds`` x len(datasets) steps, 2 iterations each, on a 2-block Swin at 32 px."""
    entries = {"chexpert": dict(type="chexpert", root=str(roots["chexpert"]), uncertain="lsr-ones"),
               "shenzhen": dict(type="shenzhen", root=str(roots["shenzhen"])),
               "rsna": dict(type="rsna", root=str(roots["rsna"]), options=dict(task="3class"))}
    return run_config(out, [entries[d] for d in datasets], rounds=rounds, **sections)


def run_config(out: Path, entries: list[dict], rounds: int = 2, **sections) -> dict:
    """A run of ``rounds`` x len(entries) steps of 2 iterations on a 2-block Swin at 32 px; ``sections``
    update the config's sections key by key."""
    cfg = dict(
        run=dict(out=str(out), seed=1, device="cpu"),
        datasets=entries,
        data=dict(image_size=32, cache_size=36, batch_size=8, eval_batch_size=64, workers=0, prepare_workers=0,
                  cache_dir=str(Path(out).parent / "cache")),
        model=dict(backbone="swin_tiny_patch4_window7_224", backbone_kwargs=SMALL_SWIN, projector_dim=8),
        training=dict(rounds=rounds, optimizer="adamw", lr=2e-3, warmup_rounds=0.5, max_iters_per_epoch=2),
        eval=dict(every="end", models=["teacher"], test_at_end=False),
    )
    for section, values in sections.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    return cfg


def checkpoint(run: Path) -> dict:
    return torch.load(Path(run) / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


def assert_bitwise_equal(a: Path, b: Path) -> None:
    sa, sb = checkpoint(a), checkpoint(b)
    assert sa["step_done"] == sb["step_done"]
    for which in ("student", "teacher", "optimizer"):
        flat_a, flat_b = _flatten(sa[which]), _flatten(sb[which])
        assert flat_a.keys() == flat_b.keys(), which
        for key, value in flat_a.items():
            other = flat_b[key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), f"{which}.{key}"
            else:
                assert value == other, f"{which}.{key}"


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}
