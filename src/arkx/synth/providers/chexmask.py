"""Synthetic CheXmask (read by :mod:`arkx.data.adapters.chexmask`): ``OriginalResolution/ChestX-Ray8.csv``
(CheXmask columns, row-major RLE masks of lungs and heart) and the matching images in ChestX-ray8's layout;
about 15% of rows are bad segmentations (low Dice RCA, shifted masks) for the quality filter. Masks follow
the drawn anatomy (:mod:`arkx.synth.structures`); no burned-in marker (it could cover a structure).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ...data.masks import rle_encode_chexmask
from ..anatomy import Case, Site, draw_case
from ..files import save_png, write_text
from ..sampling import (
    draw_seed,
    sex_age_seg,
)
from ..structures import structure_masks

#: acquisition look of this dataset
SITE = Site("chexmask", gamma=0.85, contrast=1.0, noise=0.012, blur=0.9, marker=None)


def write_chexmask(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``OriginalResolution/ChestX-Ray8.csv`` (CheXmask columns, RLE masks) and the matching images in
    ChestX-ray8's layout under ``ChestX-Ray8/images_001/images/NNNNNNNN_NNN.png`` (found by name from root).
    About 15% of rows have a low ``Dice RCA (Mean)`` and masks shifted off the anatomy, as a bad
    segmentation would be, so the quality filter has something to drop."""
    root = folder
    site = SITE
    header = ["Image Index", "Dice RCA (Max)", "Dice RCA (Mean)", "Landmarks", "Left Lung", "Right Lung", "Heart",
              "Height", "Width"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    count, patient = 0, 0
    while count < n:
        patient += 1
        sex, _ = sex_age_seg(rng)
        aseed = draw_seed(rng)
        for follow in range(min(int(rng.integers(1, 4)), n - count)):
            name = f"{patient:08d}_{follow:03d}.png"
            case = Case(sex, "PA", (), aseed, draw_seed(rng))
            save_png(root / "ChestX-Ray8" / "images_001" / "images" / name, draw_case(case, (size, size), site).image)
            masks = structure_masks(case, (size, size))
            bad = rng.random() < 0.15
            if bad:
                shift = int(round(0.25 * size))
                masks = {k: np.roll(np.roll(m, shift, axis=1), shift // 2, axis=0) for k, m in masks.items()}
                dice_mean = rng.uniform(0.35, 0.65)
            else:
                dice_mean = rng.uniform(0.75, 0.95)
            dice_max = min(1.0, dice_mean + rng.uniform(0.01, 0.05))
            marks = []
            for k in ("Right Lung", "Left Lung", "Heart"):
                ys, xs = np.nonzero(masks[k])
                marks += [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
            writer.writerow([name, f"{dice_max:.4f}", f"{dice_mean:.4f}", ",".join(map(str, marks)),
                             rle_encode_chexmask(masks["Left Lung"]), rle_encode_chexmask(masks["Right Lung"]),
                             rle_encode_chexmask(masks["Heart"]), size, size])
            count += 1
    write_text(root / "OriginalResolution" / "ChestX-Ray8.csv", buf.getvalue())
    return root
