"""A plain-PyTorch view of any dataset arkx reads: :class:`ImageDataset`, :func:`load_image`, :func:`preprocess`.

Images are read exactly as training reads them: the originals through :mod:`arkx.data.io` (every format to
grayscale float in [0, 1], DICOM windowing and MONOCHROME1 handled), resized like the cache when ``size`` is
given (:func:`arkx.data.io.load_resized`), or the rows of the prepared cache itself (``source="cache"``).
:func:`preprocess` turns such images into the normalised 3-channel input a model takes, with the evaluation
view's resize and normalisation (:func:`arkx.data.transforms.eval_view`).

Boxes are in the pixel coordinates of the image *file*, as the providers ship them and
:class:`~arkx.data.records.Records` keeps them, when the image keeps the file's size; when it is resized
(``size``), they are scaled with it (``x * size / width``, ``y * size / height``, from the file's original
size), so they always match the image tensor. Masks come at the resolution their source stores them
(JSRT's SCR masks are half the image's side).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import ArkxValueError
from .records import SPLITS, Records

log = logging.getLogger("arkx.data")

SOURCES = ("original", "cache")
#: slack on [0, 1] before a float input is taken for something else (0-255, already normalised)
_RANGE_SLACK = 1e-3


class InputRangeWarning(UserWarning):
    """An image tensor given to :func:`preprocess` does not look like values in [0, 1]."""


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """One image file (DICOM, PNG, JPEG, TIFF, MetaImage, JSRT raw) as float32 ``[1, H, W]`` in [0, 1], read
    as training reads it; with ``size``, resized to ``[1, size, size]`` exactly as the cache resizes it."""
    from .io import load_resized, read_image

    if size is None:
        return torch.from_numpy(np.ascontiguousarray(read_image(path), dtype=np.float32)).unsqueeze(0)
    return torch.from_numpy(load_resized(path, int(size))).float().div_(255.0).unsqueeze(0)


def preprocess(x, size: int) -> torch.Tensor:
    """Grayscale images in [0, 1] -> the normalised 3-channel model input, resized to ``size`` x ``size``.

    ``x``: a tensor or array ``[H, W]``, ``[1, H, W]`` (-> ``[3, size, size]``) or ``[B, 1, H, W]``
    (-> ``[B, 3, size, size]``). uint8 input is read as 0..255. A float input outside [0, 1] (0-255 values,
    or an image normalised already) is used as given, with an :class:`InputRangeWarning`: the model would
    see a different picture from the one it was trained on.
    """
    x = torch.as_tensor(x)
    batched = x.dim() == 4
    if x.dim() == 2:
        x = x[None]
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 1:
        raise ArkxValueError(f"preprocess expects grayscale [H, W], [1, H, W] or [B, 1, H, W], got shape "
                             f"{tuple(torch.as_tensor(x).shape)}")
    if x.dtype == torch.uint8:
        x = x.float().div(255.0)
    else:
        x = x.float()
        _warn_if_not_unit(x)
    from .transforms import normalize

    if x.shape[-2:] != (size, size):  # the evaluation view's resize (transforms.eval_view)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    out = normalize(x)
    return out if batched else out[0]


def _warn_if_not_unit(x: torch.Tensor) -> None:
    if x.numel() == 0:
        return
    low, high = float(x.min()), float(x.max())
    if low < -_RANGE_SLACK or high > 1 + _RANGE_SLACK:
        hint = "0-255 values? divide by 255" if high > 1.5 and low >= -_RANGE_SLACK else "already normalised?"
        warnings.warn(f"preprocess: input values span [{low:.3g}, {high:.3g}], expected [0, 1] ({hint})",
                      InputRangeWarning, stacklevel=3)


class ImageDataset(Dataset):
    """Samples of one dataset as dicts, for a plain :class:`torch.utils.data.DataLoader`.

    Args:
        type_or_records: an adapter name (``chexpert``, ``nih14``, ...) or :class:`Records` already read.
        root, options: the dataset folder and adapter options (with an adapter name).
        split: keep one split (``train``, ``val``, ``test``; default all).
        source: ``original`` (decode the files) or ``cache`` (the prepared uint8 cache; needs ``cache_dir``
            and ``size``, prepared first if needed; images the cache could not read are left out).
        size: side the image is resized to (the cache's size with ``source="cache"``); None keeps the file's.
        transform: applied to the image tensor (e.g. ``lambda x: arkx.preprocess(x, 224)``).

    Each sample: ``image`` float ``[1, H, W]`` in [0, 1] (or what ``transform`` returns), ``labels`` float
    ``[L]`` as the provider wrote them (1, 0, -1 uncertain, NaN not labelled), ``label_names``, ``image_id``,
    ``patient_id``, ``split``, ``path``, ``index`` (row in the records); when the records have them ``boxes``
    float ``[K, 4]`` (x_min, y_min, x_max, y_max in pixels of the image returned: file pixels without
    ``size``, scaled to ``size x size`` with it), ``box_labels`` (names) and ``box_classes``
    (int64 indices into :attr:`box_names`), and ``masks`` bool ``[M, H0, W0]`` (at the masks' own resolution) with
    ``mask_labels``, decoded when the sample is read. Boxes make samples ragged: batch them with :func:`collate`.
    """

    def __init__(self, type_or_records: str | Records, root: str | Path | None = None, *, split: str | None = None,
                 options: dict | None = None, source: str = "original", cache_dir: str | Path | None = None,
                 size: int | None = None, transform: Callable | None = None, progress: bool = False):
        if source not in SOURCES:
            raise ArkxValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if split is not None and split not in SPLITS:
            raise ArkxValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.records = _records(type_or_records, root, options)
        self.source, self.size, self.transform = source, size, transform
        keep = np.ones(len(self.records), dtype=bool)
        if split is not None:
            keep &= self.records.images["split"].to_numpy() == split
        self.cache = None
        if source == "cache":
            if cache_dir is None or size is None:
                raise ArkxValueError("source='cache' needs cache_dir= and size= (the cache's image side)")
            from .loaders import prepare_images

            self.cache = prepare_images(self.records, Path(cache_dir), int(size), progress=progress)
            keep &= np.asarray(self.cache.ok, dtype=bool)
        self.rows = np.flatnonzero(keep)
        self.label_names = tuple(self.records.label_names)
        self._boxes = _group(self.records.boxes)
        self._masks = _group(self.records.masks)
        boxes = self.records.boxes
        self.box_names = tuple(sorted(boxes["label"].astype(str).unique())) if boxes is not None else ()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.rows[i])
        info = self.records.images.iloc[row]
        image = self._image(row)
        if self.transform is not None:
            image = self.transform(image)
        sample = dict(image=image, labels=torch.from_numpy(self.records.labels[row].copy()),
                      label_names=self.label_names, image_id=str(info["image_id"]),
                      patient_id=str(info["patient_id"]), split=str(info["split"]),
                      path=str(self.records.root / info["path"]), index=row)
        if self.records.boxes is not None:
            sample.update(self._box_fields(str(info["image_id"]), row))
        if self.records.masks is not None:
            sample.update(self._mask_fields(str(info["image_id"])))
        return sample

    def _image(self, row: int) -> torch.Tensor:
        if self.cache is not None:
            from .loaders import _read_row

            return torch.from_numpy(_read_row(self.cache, row)).float().div_(255.0).unsqueeze(0)
        return load_image(self.records.root / self.records.images["path"].iloc[row], self.size)

    def _box_fields(self, image_id: str, row: int) -> dict[str, Any]:
        frame = self._boxes.get(image_id)
        if frame is None:
            return dict(boxes=torch.zeros((0, 4)), box_labels=[], box_classes=torch.zeros(0, dtype=torch.int64))
        coords = np.array(frame[["x_min", "y_min", "x_max", "y_max"]].to_numpy(dtype=np.float32), copy=True)
        if self.size is not None:  # the image was resized to size x size: the boxes follow it
            height, width = self._original_size(row)
            coords *= np.array([self.size / width, self.size / height] * 2, dtype=np.float32)
        names = frame["label"].astype(str).tolist()
        classes = torch.tensor([self.box_names.index(n) for n in names], dtype=torch.int64)
        return dict(boxes=torch.from_numpy(coords), box_labels=names, box_classes=classes)

    def _original_size(self, row: int) -> tuple[int, int]:
        """The image file's (height, width): recorded by the cache, else read from the file's header."""
        known = self.cache.original_size(row) if self.cache is not None else None
        if known is None:
            from .cache_targets import image_size

            path = self.records.root / self.records.images["path"].iloc[row]
            known = image_size(path)
            if known is None:
                raise ArkxValueError(f"{path}: cannot read the image's size to scale its boxes to size={self.size}")
        return known

    def _mask_fields(self, image_id: str) -> dict[str, Any]:
        from .masks import decode_mask

        frame = self._masks.get(image_id)
        if frame is None:
            return dict(masks=torch.zeros((0, 0, 0), dtype=torch.bool), mask_labels=[])
        masks = [np.asarray(decode_mask(r, self.records.root), dtype=bool) for _, r in frame.iterrows()]
        shapes = {m.shape for m in masks}
        if len(shapes) > 1:
            raise ArkxValueError(f"{self.records.dataset}: image {image_id!r} has masks of different shapes "
                                 f"{sorted(shapes)}")
        return dict(masks=torch.from_numpy(np.stack(masks)), mask_labels=frame["label"].astype(str).tolist())


def _records(type_or_records, root, options) -> Records:
    if isinstance(type_or_records, Records):
        return type_or_records
    if root is None:
        raise ArkxValueError(f"ImageDataset({type_or_records!r}): root= (the dataset folder) is required")
    from .adapters import read_dataset

    return read_dataset(str(type_or_records), root, **(options or {}))


def _group(frame) -> dict[str, Any]:
    """``{image_id: its rows}`` of a boxes / masks frame (empty when there is none)."""
    if frame is None or len(frame) == 0:
        return {}
    return {str(k): g for k, g in frame.groupby(frame["image_id"].astype(str), sort=False)}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`ImageDataset` samples: images and labels stacked (images as a list when their sizes
    differ), ``label_names`` once, boxes / masks / names / ids as lists (they are ragged)."""
    if not samples:
        return {}
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "label_names":
            out[key] = values[0]
        elif key in ("image", "labels") and all(isinstance(v, torch.Tensor) for v in values) \
                and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
