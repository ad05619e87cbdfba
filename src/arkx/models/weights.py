"""Reading weight files safely: safetensors, or torch pickles with ``weights_only=True``.

Never unpickle arbitrary objects from a file a user downloaded: a checkpoint is data, not code.
Every file that cannot be read this way (missing, empty, truncated, a pickle of objects) is a
one-line :class:`~arkx.errors.ArkxError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ArkxFileNotFoundError, ArkxValueError


def load_state_dict_file(path: str | Path) -> Any:
    """Load a ``.safetensors`` file or a torch checkpoint with ``weights_only=True`` on CPU."""
    path = Path(path)
    if not path.is_file():
        raise ArkxFileNotFoundError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; report them uniformly
        raise ArkxValueError(
            f"{path}: cannot be loaded as weights ({_first_line(err)}); "
            "arkx loads only tensors (weights_only=True) or .safetensors files"
        ) from None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error type (or OSError) for a bad header
        size = path.stat().st_size
        raise ArkxValueError(f"{path}: not a readable .safetensors file ({size} bytes; {_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
