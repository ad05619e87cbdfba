"""Where training runs: the device ``run.device`` names, the mixed-precision context, moving a kind's targets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ..config import Precision


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def autocast_for(amp: Precision, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A zero-argument context factory for the configured mixed precision."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def to_device(targets: Any, device: torch.device) -> Any:
    """``targets`` (a tensor, or lists / dicts of tensors as a kind makes them) on ``device``."""
    if isinstance(targets, torch.Tensor):
        return targets.to(device, non_blocking=True)
    if isinstance(targets, dict):
        return {k: to_device(v, device) for k, v in targets.items()}
    if isinstance(targets, (list, tuple)):
        return type(targets)(to_device(v, device) for v in targets)
    return targets
