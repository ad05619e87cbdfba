"""Synthetic CANDID-PTX (read by :mod:`arkx.data.adapters.candid_ptx`): ``Pneumothorax_reports.csv``
(``SOPInstanceUID, filename, EncodedPixels, Report``; SIIM RLE) and ``dataset/<SOPInstanceUID>.dcm``, one
to three consecutive images per patient. Masks and boxes come from the pixels the finding changed (see
:mod:`arkx.synth.annotations`); ``generate_candid_ptx(rng, n, size)`` returns the
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
from ..pneumothorax import pneumothorax_images, write_pneumothorax_dicom

#: acquisition look of this dataset
SITE = Site("candid_ptx", gamma=1.1, contrast=0.95, offset=0.03, noise=0.025, blur=0.5, marker="tr",
            marker_seed=12)


def generate_candid_ptx(rng, n: int, size: int) -> list[SynthImage]:
    images = pneumothorax_images(rng, n, size, SITE, lambda k: dicom_uid("sop", "candid", k))
    patient = 0
    for k, im in enumerate(images):  # 1-3 consecutive images per patient
        if k == 0 or rng.random() < 0.55:
            patient += 1
        im.meta["patient"] = f"P{patient}"
    return images


def write_candid_ptx(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``Pneumothorax_reports.csv`` (``SOPInstanceUID,filename,EncodedPixels,Report``; SIIM RLE) and
    ``dataset/<SOPInstanceUID>.dcm``."""
    root = folder
    rows = []
    for k, im in enumerate(generate_candid_ptx(rng, n, size)):
        path = root / "dataset" / f"{im.image_id}.dcm"
        write_pneumothorax_dicom(path, im.image, ("candid", k), im.meta["patient"], im.meta)
        mask = im.mask("Pneumothorax")
        side = "right" if mask.any() and np.flatnonzero(mask.any(axis=0)).mean() < size / 2 else "left"
        report = f"{side.capitalize()} apical pneumothorax.\nNo other acute findings." if mask.any() else \
            "Lungs are clear.\nNo pneumothorax."
        name = f"{im.meta['patient']}_{1000 + k}_{k % 3}.dcm"
        rows.append([im.image_id, name, M.rle_encode_kaggle(mask), report])
    write_csv(root / "Pneumothorax_reports.csv", ("SOPInstanceUID", "filename", "EncodedPixels", "Report"), rows)
    return root
