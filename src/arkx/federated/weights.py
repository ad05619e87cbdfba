"""What travels between a site and the server, how the server averages it, and the master checkpoint.

An *update* is a flat ``{state-dict key: tensor}`` of the shared groups (``backbone``, ``projector``: their
parameters and floating buffers, e.g. BatchNorm statistics) plus the heads that live at several sites
(``heads/<name>``), selected with the model's named groups (:meth:`arkx.models.ark.ArkModel.group_of`),
never by substring. On the wire it is Flower ``Parameters`` (one array per key, in sorted key order) with
the keys as a JSON list beside them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from ..errors import ArkxValueError

SHARED_GROUPS = ("backbone", "projector")
MASTER_FILE = "master.safetensors"
HISTORY_FILE = "master.json"


def head_group(name: str) -> str:
    return f"heads/{name}"


def selected_state(model, groups: Iterable[str]) -> dict[str, torch.Tensor]:
    """The state-dict entries (parameters and buffers) of ``groups``, detached CPU copies."""
    wanted = set(groups)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if model.group_of(k) in wanted}


@torch.no_grad()
def load_selected(model, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model`` in place (keys must exist with the same shapes)."""
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise ArkxValueError(f"the master model has entries this site's model lacks: {unknown[:5]}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ArkxValueError(f"master entry {key} has shape {tuple(value.shape)}, the site's "
                                 f"{tuple(own[key].shape)}")
        own[key].copy_(value.to(own[key].dtype))


def to_arrays(state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[np.ndarray]]:
    keys = sorted(state)
    return keys, [state[k].detach().cpu().numpy() for k in keys]


def from_arrays(keys: list[str], arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    if len(keys) != len(arrays):
        raise ArkxValueError(f"{len(keys)} names for {len(arrays)} arrays")
    return {k: torch.from_numpy(np.array(a, copy=True)) for k, a in zip(keys, arrays)}


def weighted_average(updates: list[tuple[Mapping[str, torch.Tensor], float]]) -> dict[str, torch.Tensor]:
    """``sum_i w_i·x_i / sum_i w_i`` per key over the updates that hold it (in float64, then the tensor's dtype;
    integer buffers are rounded). Updates are summed in the order given: callers sort them by site name so
    the result does not depend on the order results arrived in."""
    sums: dict[str, torch.Tensor] = {}
    totals: dict[str, float] = {}
    dtypes: dict[str, torch.dtype] = {}
    for state, weight in updates:
        if weight <= 0:
            continue
        for key, value in state.items():
            if key not in sums:
                sums[key] = torch.zeros(value.shape, dtype=torch.float64)
            sums[key].add_(value.to(torch.float64), alpha=float(weight))
            totals[key] = totals.get(key, 0.0) + float(weight)
            dtypes.setdefault(key, value.dtype)
    out = {}
    for key, acc in sums.items():
        mean = acc / totals[key]
        out[key] = (mean.round() if not dtypes[key].is_floating_point else mean).to(dtypes[key])
    return out


# ---------------------------------------------------------------------------------------------- master file
def save_master(folder: Path, state: Mapping[str, torch.Tensor], round_done: int, record: dict) -> Path:
    """Write ``master.safetensors`` (the round in its metadata: the file alone says where to resume), then
    ``master.json`` (the history, for people), each atomically: a kill leaves the old file or the new one."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MASTER_FILE
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"round": str(round_done), "format": "arkx-fed/1"}))
    _atomic(folder / HISTORY_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
    return path


def load_master(folder: Path) -> tuple[dict[str, torch.Tensor], int] | None:
    """``(state, rounds done)`` of the last master checkpoint in ``folder``, or None when there is none."""
    from safetensors import safe_open

    path = Path(folder) / MASTER_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - safe_open is no dict
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same one-line problem
        raise ArkxValueError(f"{path}: not a readable master checkpoint ({type(err).__name__}: {err})") from None
    if meta.get("format") != "arkx-fed/1" or not str(meta.get("round", "")).isdigit():
        raise ArkxValueError(f"{path}: not an arkx federation checkpoint (metadata {meta})")
    return state, int(meta["round"])


def load_history(folder: Path) -> dict:
    path = Path(folder) / HISTORY_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
