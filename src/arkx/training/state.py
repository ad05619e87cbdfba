"""Checkpoints: everything a resume needs, written atomically.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over
``last.pt``: a kill while writing leaves the previous ``last.pt`` intact, never a half-written one.
It holds only tensors and plain Python values, so it loads with ``weights_only=True``. All randomness
of a step is derived from (seed, step index), so the schedule position is the only RNG state needed;
the global torch RNG state is stored too so code outside our control (e.g. dropout in a user's
backbone) also resumes exactly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "arkx-checkpoint/1"
LAST = "last.pt"


def atomic_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(folder: Path, *, step_done: int, student, teacher, optimizer, extra: dict | None = None,
                    keep_history: int = 0) -> Path:
    """Write ``folder/last.pt`` (and ``step_<6 digits>.pt`` history if asked) atomically."""
    state = {
        "format": FORMAT,
        "step_done": int(step_done),
        "student": student.state_dict(),
        "teacher": teacher.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "extra": extra or {},
    }
    last = Path(folder) / LAST
    atomic_save(state, last)
    if keep_history > 0:
        history = Path(folder) / f"step_{step_done:06d}.pt"
        atomic_save(state, history)
        old = sorted(Path(folder).glob("step_*.pt"))[:-keep_history]
        for path in old:
            path.unlink(missing_ok=True)
    return last


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable arkx checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an arkx checkpoint (format {state.get('format') if isinstance(state, dict) else None!r}, expected {FORMAT})")
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
