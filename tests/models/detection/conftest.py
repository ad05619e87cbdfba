"""Detector tests run on tiny tensors: one intra-op thread avoids contention on a shared CPU (measured ~10x
faster for the learning test on a loaded 2-core machine)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _detector_tests_use_one_thread(one_thread):
    """Every detector test runs on one thread (tests/conftest.py: tiny models)."""
    yield
