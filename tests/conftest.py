"""Shared fixtures: tiny models and in-memory datasets so core tests run in seconds on the CPU."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from arkx.data.loaders import PreparedDataset
from arkx.data.records import Records, Task
from arkx.models.ark import ArkModel
from arkx.models.backbones import create_backbone

TINY_SWIN = dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, img_size=32)


class MemoryImages:
    """Same interface as the prepared cache (``ok``, ``failures``, ``__getitem__``), held in memory."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.ok = np.ones(len(array), dtype=bool)
        self.failures: list = []
        self.size = array.shape[-1]

    def __len__(self):
        return len(self.array)

    def __getitem__(self, i):
        return self.array[i]


def make_records(name: str, n: int, labels: tuple[str, ...], seed: int, kind: str = "multilabel") -> Records:
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * (n * 6 // 10) + ["val"] * (n * 2 // 10) + ["test"] * (n - n * 8 // 10))
    images = pd.DataFrame(dict(image_id=[f"{name}-{i}" for i in range(n)], path=[f"{i}.png" for i in range(n)],
                               patient_id=[f"p{i}" for i in range(n)], split=split, view="PA",
                               sex=rng.choice(["M", "F"], n), age=rng.uniform(20, 80, n)))
    if kind == "multiclass":
        cls = rng.integers(0, len(labels), n)
        y = np.eye(len(labels), dtype=np.float32)[cls]
    else:
        y = (rng.random((n, len(labels))) < 0.4).astype(np.float32)
    return Records(dataset=name, root=".", images=images, task=Task("cls", kind, labels), labels=y)


def learnable_images(records: Records, size: int, seed: int) -> np.ndarray:
    """Images whose brightness in a label-specific region encodes the first label (learnable)."""
    rng = np.random.default_rng(seed)
    n = len(records)
    imgs = rng.integers(40, 90, (n, size, size)).astype(np.uint8)
    first = np.nan_to_num(records.labels[:, 0]) > 0.5
    imgs[first, size // 4: size // 2, size // 4: size // 2] = 220
    return imgs


@pytest.fixture
def tiny_datasets():
    out = {}
    for k, (name, labels, kind) in enumerate([("alpha", ("a1", "a2", "a3"), "multilabel"),
                                               ("beta", ("b1", "b2"), "multiclass")]):
        rec = make_records(name, 40, labels, seed=k, kind=kind)
        out[name] = PreparedDataset(name=name, records=rec, images=MemoryImages(learnable_images(rec, 36, k)))
    return out


def tiny_model(heads, seed: int = 0, **backbone_options) -> ArkModel:
    torch.manual_seed(seed)
    backbone = create_backbone("swin_tiny_patch4_window7_224", **{**TINY_SWIN, **backbone_options})
    return ArkModel(backbone, heads, projector="linear", projector_dim=24)


@pytest.fixture
def tiny_heads():
    return [Task("alpha", "multilabel", ("a1", "a2", "a3")), Task("beta", "multiclass", ("b1", "b2"))]


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread avoids contention on a shared 2-core CPU (a detector step measured 20x
    faster than with two). Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
