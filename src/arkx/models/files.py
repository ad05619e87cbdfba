"""Model files: write an arkx model as a ``.safetensors`` export and rebuild one from an export, a run folder
or a run's ``checkpoints/last.pt``.

An export carries, in its metadata, everything needed to rebuild the model (the model config, the heads,
the image size and normalisation) under the format tag :data:`EXPORT_FORMAT`; loading is strict, so a
file whose keys or shapes differ from the rebuilt model is a one-line error listing the differences.
The checkpoint helpers come from :mod:`arkx.training.state` (a dependency-free module: it imports only
:mod:`arkx.errors`), imported where used.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import __version__
from ..tasks.detection import saved_branch_options
from ..config import ArkConfig, load_config
from ..data.transforms import MEAN, STD
from ..errors import ArkxFileNotFoundError, ArkxValueError
from .ark import ArkModel, build_model
from ..tasks import Task

EXPORT_FORMAT = "arkx-model/1"
CONFIG_FILE = "config.yaml"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def export_model(model: ArkModel, cfg: ArkConfig, path: Path) -> Path:
    """Weights as safetensors, with what is needed to rebuild the model in the metadata."""
    from safetensors.torch import save_file

    from ..training.state import space_checked, tensor_bytes

    meta = dict(format=EXPORT_FORMAT, arkx_version=__version__, model=cfg.model.model_dump(mode="json"), heads=model.head_config(),
                image_size=cfg.data.image_size, normalization=dict(mean=MEAN, std=STD))
    if model.branch_config():  # segmentation/detection branches: their options rebuild them (Ark exports: none)
        meta["branches"] = model.branch_config()
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    try:
        with space_checked(path, tensor_bytes(state) + 1024 * 1024):
            save_file(state, str(tmp), metadata={"arkx": json.dumps(meta)})
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_model(path: str | Path, which: str = "teacher") -> ArkModel:
    """Rebuild an exported (or in-progress) arkx model: a run folder, a ``.safetensors`` export or a
    ``checkpoints/last.pt``. ``which`` picks teacher (the released model) or student."""
    from ..training.state import LAST, load_checkpoint

    path = Path(path)
    if which not in ("teacher", "student"):
        raise ArkxValueError(f"which must be 'teacher' or 'student', got {which!r}")
    if path.is_dir():
        exported = path / f"{which}.safetensors"
        path = exported if exported.exists() else path / "checkpoints" / LAST
    if not path.is_file():
        raise ArkxFileNotFoundError(f"no model at {path}")
    if path.suffix == ".safetensors":
        return _load_export(path)
    # A checkpoint of a run in progress: rebuild from the run's config and heads stored beside it.
    run_dir = path.parent.parent
    state = load_checkpoint(path)
    cfg = load_config(run_dir / CONFIG_FILE)
    heads = [Task(h["name"], h["kind"], tuple(h["label_names"])) for h in state["extra"].get("heads", [])]
    if not heads:
        raise ArkxValueError(f"{path}: checkpoint does not record its heads")
    model = build_model(cfg.model.model_copy(update={"checkpoint": None}), heads,
                        branch_options=saved_branch_options(state["extra"].get("branches")))
    _load_strict(model, state[which], path)
    return model.eval()


def _load_export(path: Path) -> ArkModel:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("arkx", "null") or "null")
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        size = path.stat().st_size
        raise ArkxValueError(f"{path}: not a readable .safetensors file ({size} bytes; {_one_line(err)})") from None
    if not meta or meta.get("format") != EXPORT_FORMAT:
        raise ArkxValueError(f"{path}: not an arkx model export (no arkx metadata)")
    from ..config import ModelConfig

    model_cfg = ModelConfig.model_validate({**meta["model"], "checkpoint": None})
    heads = [Task(h["name"], h["kind"], tuple(h["label_names"])) for h in meta["heads"]]
    model = build_model(model_cfg, heads, branch_options=saved_branch_options(meta.get("branches")))
    _load_strict(model, state, path)
    return model.eval()


def _load_strict(model: torch.nn.Module, state: dict, source: Path) -> None:
    from .backbones import format_key_mismatch

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ArkxValueError(format_key_mismatch(str(source), missing, unexpected, mismatched, own, state))
    model.load_state_dict(state)
