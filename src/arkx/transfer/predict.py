"""Per-head probabilities for image files from a trained model, with optional Grad-CAM heatmaps.

Images are read exactly as training reads them: :func:`arkx.data.io.load_resized` at the model's cache
size (the decode and resize the image cache stores), then :func:`arkx.data.transforms.eval_view` at its
input size. Sizes come from the run's config or the export's metadata (:func:`arkx.transfer.embed.model_sizes`).

The result is a long table, one row per image x head x label: a multilabel head's outputs are sigmoids
(independent findings), a multiclass head's a softmax over its classes.

:class:`HeadModule` wraps one head as a plain ``nn.Module`` returning its logits ``[B, L]``, which is
the shape attribution libraries (captum, pytorch-grad-cam) and metric code expect. Heatmaps use the
optional ``grad-cam`` package on the deepest backbone stage whose feature map still has a spatial grid
(timm's ``feature_info``); Swin stages give NHWC maps, which are permuted to NCHW for it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ArkxFileNotFoundError, ArkxRuntimeError, ArkxValueError

log = logging.getLogger("arkx.transfer")

#: Files a folder scan takes as images (DICOM files without a suffix are found by their magic bytes).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".mha", ".mhd",
                            ".dcm", ".dicom", ".dic"})
OUT_SUFFIXES = (".csv", ".json")
COLUMNS = ["image", "head", "label", "kind", "probability"]
GRAD_CAM_HINT = ("Grad-CAM heatmaps need the optional grad-cam package: pip install grad-cam "
                 "(or pip install 'arkx[cam]')")
#: A stage whose map is smaller than this (per side) carries no location, so heatmaps use an earlier one.
MIN_CAM_GRID = 2
CAM_ALPHA = 0.45  # weight of the colour map over the grayscale image


class HeadModule(nn.Module):
    """One head of an :class:`arkx.ArkModel` as a module: ``forward(x)`` returns its logits ``[B, L]``.

    ``label_names`` and ``kind`` say what the columns are. The wrapped model is shared, not copied.
    """

    def __init__(self, model, head: str):
        super().__init__()
        if head not in model.heads:
            raise ArkxValueError(f"unknown head {head!r}; the model has {', '.join(model.heads) or 'no heads'}")
        self.model = model
        self.head = head

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.model.head_specs[self.head].label_names)

    @property
    def kind(self) -> str:
        return self.model.head_specs[self.head].kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.head)[1]


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Sigmoid for a multilabel head (independent findings), softmax for a multiclass head."""
    return torch.softmax(logits, dim=1) if kind == "multiclass" else torch.sigmoid(logits)


# ---------------------------------------------------------------------------- inputs
def find_images(inputs: str | Path | Iterable[str | Path]) -> tuple[list[Path], set[Path]]:
    """The image files named by ``inputs`` (files, or folders scanned recursively without OS junk), in order,
    and the subset found by scanning (an unreadable one there is skipped, a named one is an error)."""
    from ..data.adapters._common import walk_files
    from ..data.io import is_dicom

    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise ArkxValueError("no input images given")
    files: list[Path] = []
    scanned: set[Path] = set()
    for item in map(Path, items):
        if item.is_dir():
            found = [p for p in walk_files(item) if p.suffix.lower() in IMAGE_SUFFIXES
                     or (p.suffix == "" and is_dicom(p))]
            if not found:
                raise ArkxValueError(f"{item}: no image files in the folder (looked for "
                                     f"{', '.join(sorted(IMAGE_SUFFIXES))} and DICOM files)")
            files += found
            scanned.update(found)
        elif item.is_file():
            files.append(item)
        else:
            raise ArkxFileNotFoundError(f"no image or folder at {item}")
    return list(dict.fromkeys(files)), scanned


def _read_images(paths: Sequence[Path], scanned: set[Path], cache_size: int) -> tuple[list[Path], list[np.ndarray]]:
    """uint8 ``[S, S]`` images as the cache stores them; unreadable scanned files are skipped with a warning."""
    from ..data.io import ImageReadError, load_resized

    kept, arrays = [], []
    for path in paths:
        try:
            arrays.append(load_resized(path, cache_size))
        except ImageReadError as err:
            if path not in scanned:
                raise
            log.warning("skipped unreadable image %s", err)
            continue
        kept.append(path)
    return kept, arrays


# ---------------------------------------------------------------------------- prediction
def predict(model_or_path, inputs, *, heads: Sequence[str] | None = None, which: str = "teacher",
            cam_dir: str | Path | None = None, cam_threshold: float = 0.5, batch_size: int = 16,
            device: str = "auto", image_size: int | None = None, cache_size: int | None = None,
            out: str | Path | None = None, progress: bool = True):
    """Per-head probabilities for image files, optionally with a Grad-CAM heatmap per positive finding.

    Args:
        model_or_path: a run folder, ``.safetensors`` export or ``checkpoints/last.pt`` (as for
            :func:`arkx.load_model`), or an :class:`arkx.ArkModel` (then ``image_size`` is required).
        inputs: an image file (DICOM, PNG, JPEG, MetaImage...), a folder (scanned recursively), or a list of them.
        heads: the heads to report (default: all, in the model's order).
        which: ``teacher`` (the released model) or ``student``.
        cam_dir: write ``<image stem>__<head>__<label>.png`` heatmaps there for every finding whose
            probability is >= ``cam_threshold`` (needs ``pip install grad-cam``).
        image_size, cache_size: override the model's sizes (default: its run config / export metadata).
        out: also write the table (``.csv`` or ``.json``).

    Returns:
        a ``pandas.DataFrame`` with columns image, head, label, kind, probability (plus ``cam``, the
        heatmap file or ``""``, when ``cam_dir`` is given), one row per image x head x label, labels in head order.
    """
    from .embed import _device, _resolve_model

    if not 0.0 <= float(cam_threshold) <= 1.0:
        raise ArkxValueError(f"cam_threshold must be within [0, 1], got {cam_threshold}")
    if batch_size < 1:
        raise ArkxValueError(f"batch_size must be >= 1, got {batch_size}")
    if out is not None and Path(out).suffix.lower() not in OUT_SUFFIXES:
        raise ArkxValueError(f"{out}: predictions are written as .csv or .json")
    if cam_dir is not None:
        _require_grad_cam()  # before any model or image is read
    if which not in ("teacher", "student"):
        raise ArkxValueError(f"which must be one of teacher, student, got {which!r}")
    paths, scanned = find_images(inputs)
    model, _, sizes = _resolve_model(model_or_path, which, image_size, cache_size)
    names = _pick_heads(model, heads)
    torch_device = _device(device)
    model = model.to(torch_device)
    stems = _cam_stems(paths) if cam_dir is not None else {}
    if cam_dir is not None:
        Path(cam_dir).mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    from ..progress import Progress

    with Progress(len(paths), "predicting", enabled=progress, unit="images") as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            kept, arrays = _read_images(chunk, scanned, sizes.cache_size)
            if kept:
                rows += _predict_batch(model, kept, arrays, names, sizes.image_size, torch_device, cam_dir,
                                       float(cam_threshold), stems)
            bar.advance(len(chunk))
    if not rows:
        raise ArkxValueError("no readable image among the inputs")
    table = _frame(rows, cam_dir is not None)
    if out is not None:
        write_predictions(table, out)
    return table


def _pick_heads(model, heads: Sequence[str] | None) -> list[str]:
    if not heads:
        return list(model.heads)
    unknown = [h for h in heads if h not in model.heads]
    if unknown:
        raise ArkxValueError(f"unknown head(s) {', '.join(unknown)}; the model has {', '.join(model.heads)}")
    return list(dict.fromkeys(heads))


def _predict_batch(model, paths: list[Path], arrays: list[np.ndarray], heads: list[str], image_size: int,
                   device: torch.device, cam_dir, threshold: float, stems: dict[Path, str]) -> list[dict]:
    from ..data.transforms import eval_view

    x = eval_view(torch.from_numpy(np.stack(arrays)).unsqueeze(1).to(device), image_size)
    with torch.inference_mode():
        z = model.embed(x)
        probs = {h: probabilities(model.heads[h](z), model.head_specs[h].kind).float().cpu().numpy() for h in heads}
    rows = []
    for i, path in enumerate(paths):
        for head in heads:
            spec = model.head_specs[head]
            cams = {}
            if cam_dir is not None:
                positive = [j for j, p in enumerate(probs[head][i]) if p >= threshold]
                cams = _write_cams(model, head, x[i:i + 1], positive, Path(cam_dir), stems[path])
            for j, label in enumerate(spec.label_names):
                row = dict(image=str(path), head=head, label=label, kind=spec.kind,
                           probability=float(probs[head][i, j]))
                if cam_dir is not None:
                    row["cam"] = cams.get(j, "")
                rows.append(row)
    return rows


def _frame(rows: list[dict], with_cam: bool):
    import pandas as pd

    return pd.DataFrame(rows, columns=COLUMNS + (["cam"] if with_cam else []))


def write_predictions(table, path: str | Path) -> Path:
    """Write a :func:`predict` table as ``.csv`` or ``.json`` (a list of row objects)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUT_SUFFIXES:
        raise ArkxValueError(f"{path}: predictions are written as .csv or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_json(path, orient="records", indent=2)
    return path


# ---------------------------------------------------------------------------- Grad-CAM
def _require_grad_cam():
    """``(GradCAM, ClassifierOutputTarget)`` from the optional grad-cam package, or a one-line error."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise ArkxRuntimeError(GRAD_CAM_HINT) from None
    return GradCAM, ClassifierOutputTarget


def cam_layer(backbone: nn.Module, image_size: int) -> tuple[nn.Module, int]:
    """The backbone stage Grad-CAM reads and its channel count: the deepest stage in timm's
    ``feature_info`` whose map is at least :data:`MIN_CAM_GRID` per side at ``image_size``."""
    info = getattr(backbone, "feature_info", None)
    stages = [dict(s) for s in info] if info else []
    if not stages or not all({"module", "reduction", "num_chs"} <= set(s) for s in stages):
        raise ArkxValueError(f"{type(backbone).__name__}: no timm feature_info to choose a Grad-CAM layer from")
    usable = [s for s in stages if image_size // int(s["reduction"]) >= MIN_CAM_GRID] or stages[:1]
    stage = usable[-1]
    return backbone.get_submodule(stage["module"]), int(stage["num_chs"])


def _to_nchw(channels: int):
    """Grad-CAM's reshape transform: Swin stages give ``[B, H, W, C]``, CNN stages ``[B, C, H, W]``."""

    def reshape(t: torch.Tensor) -> torch.Tensor:
        if t.dim() != 4:
            raise ArkxValueError(f"Grad-CAM needs a 2-D feature map; the chosen stage gives shape {tuple(t.shape)}")
        if t.shape[1] != channels and t.shape[-1] == channels:
            return t.permute(0, 3, 1, 2)
        return t

    return reshape


def grad_cam(model, head: str, x: torch.Tensor, labels: Sequence[int]) -> np.ndarray:
    """Grad-CAM maps ``[len(labels), H, W]`` in [0, 1] (input resolution) of one image ``x`` ``[1, 3, H, W]``
    for the given label indices of ``head``, through the ``grad-cam`` package."""
    GradCAM, ClassifierOutputTarget = _require_grad_cam()

    layer, channels = cam_layer(model.backbone, int(x.shape[-1]))
    # an input that requires grad: the graph reaches the stage even when the model's weights are frozen
    batch = x.detach().clone().repeat(len(labels), 1, 1, 1).requires_grad_(True)
    with torch.enable_grad(), GradCAM(model=HeadModule(model, head), target_layers=[layer],
                                      reshape_transform=_to_nchw(channels)) as cam:
        maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(j)) for j in labels])
    model.zero_grad(set_to_none=True)  # leave no gradients behind in the caller's model
    return np.asarray(maps, dtype=np.float32)


def _write_cams(model, head: str, x: torch.Tensor, labels: list[int], folder: Path, stem: str) -> dict[int, str]:
    if not labels:
        return {}
    maps = grad_cam(model, head, x, labels)
    gray = _seen_image(x)
    names = model.head_specs[head].label_names
    written = {}
    for j, heat in zip(labels, maps):
        path = folder / f"{stem}__{_safe(head)}__{_safe(names[j])}.png"
        if not heat.any():  # Grad-CAM keeps positive evidence only; none at this layer gives an empty map
            log.info("%s: no positive Grad-CAM evidence for %s/%s; its heatmap is empty", stem, head, names[j])
        overlay(gray, heat).save(path)
        written[j] = str(path)
    return written


def _seen_image(x: torch.Tensor) -> np.ndarray:
    """The grayscale image the model saw, ``[H, W]`` in [0, 1] (the normalisation undone)."""
    from ..data.transforms import MEAN, STD

    return (x[0, 0].detach().float().cpu().numpy() * STD[0] + MEAN[0]).clip(0.0, 1.0)


def jet(values: np.ndarray) -> np.ndarray:
    """A blue-cyan-yellow-red colour map of values in [0, 1] -> uint8 ``[..., 3]`` (no matplotlib needed)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def overlay(gray: np.ndarray, heat: np.ndarray):
    """A PIL RGB image: the colour-mapped ``heat`` blended over the grayscale image (both ``[H, W]`` in [0, 1])."""
    from PIL import Image

    base = np.repeat((np.clip(gray, 0.0, 1.0)[..., None] * 255.0 + 0.5).astype(np.uint8), 3, axis=2)
    return Image.blend(Image.fromarray(base, "RGB"), Image.fromarray(jet(heat), "RGB"), CAM_ALPHA)


def _safe(name: str) -> str:
    """A file-name-safe form of a head or label name (``Pleural Effusion`` -> ``Pleural_Effusion``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "_"


def _cam_stems(paths: list[Path]) -> dict[Path, str]:
    """Heatmap file-name stems: the image's stem, or its path (relative to the inputs' common folder)
    when several inputs share a stem, as DICOM studies often do (``study1/image.dcm``, ``study2/image.dcm``)."""
    import os

    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    common = Path(os.path.commonpath([str(p.resolve().parent) for p in paths])) if paths else Path(".")
    return {p: _safe(p.stem) if counts[p.stem] == 1 else _safe(str(p.resolve().relative_to(common)).replace(".", "_"))
            for p in paths}
