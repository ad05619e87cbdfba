"""The batch every loader yields: images and the targets of each task kind, by name.

A :class:`Batch` replaces the positional ``(images, labels, rows)`` tuple, so a new kind of target
(boxes, masks) is a new field rather than a new position every consumer must know about. Fields a
dataset does not have are ``None``; ragged targets (boxes) are lists with one tensor per image.

Coordinates: boxes are ``x_min, y_min, x_max, y_max`` in pixels of the tensor they travel with (the
cache's ``S x S`` grid in a loader's batch; the model input's grid after a view is taken), with an
exclusive maximum (:mod:`arkx.data.masks`). ``box_labels`` index the dataset's detection label names.
Masks are boolean, one channel per segmentation structure, on the same grid as the image;
``mask_present[i, m]`` is False where structure ``m`` is not annotated for image ``i`` (no loss, no score).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [B, 1, S, S]
    rows: torch.Tensor  # int64 [B]: rows of the dataset's records.images
    labels: torch.Tensor | None = None  # float32 [B, L], raw (1 / 0 / -1 uncertain / NaN missing)
    boxes: list[torch.Tensor] | None = None  # per image float32 [n_i, 4], xyxy pixels
    box_labels: list[torch.Tensor] | None = None  # per image int64 [n_i]
    masks: torch.Tensor | None = None  # bool [B, M, S, S]
    mask_present: torch.Tensor | None = None  # bool [B, M]
    target_size: int | None = None  # side of the grid masks and boxes are on (None: the images' grid)

    @property
    def grid(self) -> int:
        """Side of the square pixel grid the masks and boxes are on."""
        return int(self.target_size) if self.target_size is not None else int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device`` (rows stay on the CPU: they index host-side records)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking), skip=("rows",))

    def pin_memory(self) -> Batch:
        """Page-locked copies (the DataLoader calls this when ``pin_memory=True``)."""
        return self._map(lambda t: t.pin_memory())

    def replace(self, **changes: Any) -> Batch:
        return dataclasses.replace(self, **changes)

    def _map(self, fn, skip: tuple[str, ...] = ()) -> Batch:
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in skip or not isinstance(value, (torch.Tensor, list)):
                continue
            changes[f.name] = [fn(v) for v in value] if isinstance(value, list) else fn(value)
        return dataclasses.replace(self, **changes)


#: sample keys stacked into one tensor, and those kept as per-image lists
_STACKED = ("labels", "masks", "mask_present")
_RAGGED = ("boxes", "box_labels")


def collate(samples: list[dict[str, Any]]) -> Batch:
    """One :class:`Batch` from loader samples (dicts with ``image``, ``row`` and any target keys).

    A target key must be present in every sample or in none (one dataset, one set of tasks)."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys = set(samples[0])
    for s in samples[1:]:
        if set(s) != keys:
            raise ValueError(f"samples of one batch carry different targets: {sorted(keys)} vs {sorted(s)}")
    fields: dict[str, Any] = dict(
        images=torch.stack([s["image"] for s in samples]),
        rows=torch.as_tensor([int(s["row"]) for s in samples], dtype=torch.int64),
    )
    for key in _STACKED:
        if key in keys:
            fields[key] = torch.stack([torch.as_tensor(s[key]) for s in samples])
    for key in _RAGGED:
        if key in keys:
            fields[key] = [torch.as_tensor(s[key]) for s in samples]
    return Batch(**fields)
