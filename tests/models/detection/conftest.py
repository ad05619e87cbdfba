"""Detector tests run on tiny tensors: one intra-op thread avoids contention on a shared CPU (measured ~10x
faster for the learning test on a loaded 2-core machine)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
