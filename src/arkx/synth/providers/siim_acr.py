"""Synthetic SIIM-ACR pneumothorax (read by :mod:`arkx.data.adapters.siim_acr`): ``train-rle.csv`` (``ImageId,
EncodedPixels``; SIIM relative RLE, -1 = none, some masks split over two rows) and
``dicom-images-train/<study>/<series>/<ImageId>.dcm``. Masks and boxes come from the pixels the finding
changed (see :mod:`arkx.synth.annotations`); ``generate_siim_acr(rng, n, size)`` returns the
:class:`~arkx.synth.annotations.SynthImage` list the writer writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data import masks as M
from ..anatomy import Site
from ..annotations import SynthImage
from ..dicom import dicom_uid
from ..files import write_csv
from ..ids import uuid_like
from ..pneumothorax import pneumothorax_images, write_pneumothorax_dicom

#: acquisition look of this dataset
SITE = Site("siim_acr", gamma=0.95, contrast=1.0, offset=0.02, noise=0.02, blur=0.6, marker="tl",
            marker_seed=11)


def generate_siim_acr(rng, n: int, size: int) -> list[SynthImage]:
    return pneumothorax_images(rng, n, size, SITE, lambda k: dicom_uid("sop", "siim", k))


def _split_rows(mask: np.ndarray, rng) -> list[np.ndarray]:
    """One mask as 1 or (30%) 2 annotation rows (split at the middle row of the mask), like SIIM's repeats."""
    if rng.random() >= 0.3:
        return [mask]
    rows = np.flatnonzero(mask.any(axis=1))
    cut = int(rows[len(rows) // 2])
    top, bottom = mask.copy(), mask.copy()
    top[cut:], bottom[:cut] = False, False
    return [m for m in (top, bottom) if m.any()]


def write_siim_acr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``train-rle.csv`` (``ImageId, EncodedPixels``; SIIM relative RLE; -1 = none; repeated rows for
    some masks) and ``dicom-images-train/<study>/<series>/<ImageId>.dcm`` (ImageId = SOPInstanceUID)."""
    root = folder
    rows = []
    for k, im in enumerate(generate_siim_acr(rng, n, size)):
        study, series = dicom_uid("study", "siim", k), dicom_uid("series", "siim", k)
        path = root / "dicom-images-train" / study / series / f"{im.image_id}.dcm"
        write_pneumothorax_dicom(path, im.image, ("siim", k), uuid_like(rng), im.meta)
        mask = im.mask("Pneumothorax")
        if mask.any():
            rows += [[im.image_id, M.rle_encode_kaggle(part)] for part in _split_rows(mask, rng)]
        else:
            rows.append([im.image_id, "-1"])
    write_csv(root / "train-rle.csv", None, rows, raw_header="ImageId, EncodedPixels")
    return root
