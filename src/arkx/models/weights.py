"""Reading weight files safely: safetensors, or torch pickles with ``weights_only=True``.

Never unpickle arbitrary objects from a file a user downloaded: a checkpoint is data, not code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_state_dict_file(path: str | Path) -> Any:
    """Load a ``.safetensors`` file or a torch checkpoint with ``weights_only=True`` on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; report them uniformly
        raise ValueError(
            f"{path}: cannot be loaded as weights ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "arkx loads only tensors (weights_only=True) or .safetensors files"
        ) from None
