"""Tiny federations on synthetic data: three sites, timm's test_resnet (0.4 M parameters) at 32 px, two iterations per dataset epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

import arkx

#: site -> its datasets; ``shenzhen`` lives at two sites, so its head is averaged between them
SITES = {"a": ("chexpert", "shenzhen"), "b": ("nih14", "shenzhen"), "c": ("rsna",)}
#: training images of each site's datasets differ, so the weighted average differs from the plain mean
TRAIN_CAP = {"a": 40, "b": 24, "c": 32}


@pytest.fixture(scope="session")
def fed_roots(tmp_path_factory):
    out = tmp_path_factory.mktemp("fed-synth")
    return arkx.synthesize(out, seed=5, n=80, size=40, datasets=["chexpert", "shenzhen", "nih14", "rsna"])


def site_dict(roots, site: str, cache: Path) -> dict:
    datasets = []
    for name in SITES[site]:
        entry = dict(type=name, root=str(roots[name]), max_train_images=TRAIN_CAP[site])
        if name == "rsna":
            entry["options"] = dict(task="3class")
        datasets.append(entry)
    return dict(
        run=dict(seed={"a": 1, "b": 2, "c": 3}[site], device="cpu"),
        datasets=datasets,
        data=dict(image_size=32, cache_size=36, batch_size=8, eval_batch_size=64, workers=0, prepare_workers=0,
                  cache_dir=str(cache)),
        model=dict(backbone="test_resnet", projector="linear", projector_dim=16),
        training=dict(optimizer="adamw", lr=2e-3, warmup_rounds=0, lr_schedule="constant", max_iters_per_epoch=2,
                      ema=dict(momentum_start=0.5, momentum_end=0.9)),
        eval=dict(every="end", models=["teacher"], test_at_end=False),
    )


def federation_dict(roots, out: Path, sites=tuple(SITES), rounds: int = 2, **extra) -> dict:
    cache = out.parent / f"{out.name}-cache"
    cfg = dict(sites={s: dict(config=site_dict(roots, s, cache)) for s in sites}, rounds=rounds, local_rounds=1,
               min_clients=min(2, len(sites)), seed=7, out=str(out))
    return {**cfg, **extra}
