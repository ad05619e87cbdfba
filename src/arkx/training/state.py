"""Checkpoints: everything a resume needs, written atomically.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over
``last.pt``: a kill while writing leaves the previous ``last.pt`` intact, never a half-written one.
It holds only tensors and plain Python values, so it loads with ``weights_only=True``. All randomness
of a step is derived from (seed, step index), so the schedule position is the only RNG state needed;
the global torch RNG state is stored too so code outside our control (e.g. dropout in a user's
backbone) also resumes exactly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ArkxFileNotFoundError, ArkxValueError, DiskFull

FORMAT = "arkx-checkpoint/1"
LAST = "last.pt"
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: torch's zip writer adds headers and alignment to the raw tensor bytes
_SERIALIZATION_SLACK = 1.05
_MB = 1024 * 1024


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor inside ``obj`` (nested dicts, lists, tuples): about what ``torch.save`` writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(path: Path, needed: int | None, intact: bool = True) -> DiskFull:
    """The one-line error for a write that found no space: the path, the space needed, what is kept."""
    free = free_bytes(Path(path).parent)
    need = f"needs about {needed / _MB:.1f} MB" if needed else "needs more space"
    have = f", {free / _MB:.1f} MB free" if free is not None else ""
    kept = f"; the previous {Path(path).name} is intact" if intact and Path(path).exists() else ""
    err = DiskFull(f"No space left on device writing {path} ({need}{have}){kept}; free some space and resume")
    err.errno = errno.ENOSPC  # (no ``filename``: OSError would print it in its own format instead of the line)
    err.path = str(path)
    return err


def _out_of_space(err: BaseException, folder: Path, needed: int) -> bool:
    """Whether a write error means a full disk. torch's zip writer reports ENOSPC as a RuntimeError
    (``inline_container.cc ... file write failed``), so for anything but an OSError look at free space."""
    if isinstance(err, OSError):
        return err.errno in _SPACE_ERRNOS
    if isinstance(err, RuntimeError):
        free = free_bytes(folder)
        return free is not None and free < needed
    return False


@contextlib.contextmanager
def space_checked(path: Path, needed: int = 0):
    """Turn a full disk while writing ``path`` into one :class:`DiskFull` line naming it and the space needed.
    Refuses up front when ``needed`` bytes are known not to fit."""
    path = Path(path)
    free = free_bytes(path.parent) if needed else None
    if free is not None and free < needed:
        raise disk_full(path, needed)
    try:
        yield
    except DiskFull:
        raise
    except (OSError, RuntimeError) as err:
        if _out_of_space(err, path.parent, needed):
            raise disk_full(path, needed) from None
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file, fsync, rename over ``path``: ``path`` is either the old or the new file.
    A full disk (checked before writing, and caught while writing) is one :class:`DiskFull` line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = int(tensor_bytes(obj) * _SERIALIZATION_SLACK) + _MB
    with space_checked(path, needed):
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
    teacher_state = teacher.state_dict()
    state = {
        "format": FORMAT,
        "step_done": int(step_done),
        "student": student.state_dict(),
        "teacher": teacher_state,
        # The teacher's backbone in timm's key names, under the key timm's load_checkpoint prefers, so
        # timm.create_model(name, num_classes=0, checkpoint_path=last.pt) loads the released model. The
        # tensors are the teacher's own (torch.save stores shared storage once): the file does not grow.
        "state_dict_ema": {k[len("backbone."):]: v for k, v in teacher_state.items() if k.startswith("backbone.")},
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


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """Load a checkpoint (``path`` or ``path/last.pt``) on the CPU. ``mmap=True`` maps the tensors instead
    of reading them: cheap when only ``step_done`` and ``extra`` are needed."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise ArkxFileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        raise ArkxValueError(f"{path}: not a readable arkx checkpoint ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:300]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ArkxValueError(f"{path}: not an arkx checkpoint (format {state.get('format') if isinstance(state, dict) else None!r}, expected {FORMAT})")
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
