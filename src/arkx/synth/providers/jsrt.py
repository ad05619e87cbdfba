"""Synthetic JSRT with the SCR masks (read by :mod:`arkx.data.adapters.jsrt`):
``All247images/JPC{L,N}N###.IMG`` (raw big-endian inverted 12-bit), SCR masks (GIF, half resolution) in
``scratch/fold{1,2}/masks/<structure>/`` and ``CLNDAT_EN.txt`` / ``CNNDAT_EN.txt`` (nodule positions in
2048-pixel coordinates). Masks follow the drawn anatomy (:mod:`arkx.synth.structures`); no burned-in marker
(it could cover a structure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.raw_img import JSRT_PIXEL_MM, JSRT_SIDE, write_jsrt_img
from ..anatomy import Case, Finding, Site, draw_case
from ..files import save_mask, write_text
from ..sampling import (
    draw_seed,
    sex_age_seg,
)
from ..structures import structure_masks

#: acquisition look of this dataset
SITE = Site("jsrt", gamma=1.1, contrast=1.0, offset=0.0, noise=0.01, blur=0.8, marker=None)
SCR_FOLDERS = {"Left Lung": "left lung", "Right Lung": "right lung", "Heart": "heart",
               "Left Clavicle": "left clavicle", "Right Clavicle": "right clavicle"}


def write_jsrt(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``All247images/JPC{L,N}N###.IMG`` (raw, big-endian, inverted 12-bit), SCR masks (GIF, half
    resolution) in ``scratch/fold{1,2}/masks/<structure>/`` (odd numbers fold1, even fold2), and
    ``CLNDAT_EN.txt`` / ``CNNDAT_EN.txt`` (tab-separated; nodule x, y in 2048-pixel coordinates)."""
    root = folder
    site = SITE
    n_nod = int(np.clip(round(n * 154 / 247), 2, n - 2))
    scale = JSRT_SIDE / size
    cln, cnn = [], []
    for i in range(n):
        nodule = i < n_nod
        num = i + 1 if nodule else i - n_nod + 1
        stem = f"JPC{'L' if nodule else 'N'}N{num:03d}"
        sex, age = sex_age_seg(rng, 0.5, 16, 89)
        aseed = draw_seed(rng)
        for _ in range(12):  # JSRT images hold one nodule: redraw until the finding made exactly one
            case = Case(sex, "PA", (Finding("nodule", 1.0),) if nodule else (), aseed, draw_seed(rng))
            drawn = draw_case(case, (size, size), site)
            if not nodule or len(drawn.boxes.get(0, [])) == 1:
                break
        write_jsrt_img(root / "All247images" / f"{stem}.IMG", drawn.image)
        fold = 1 if num % 2 else 2
        half = max(16, size // 2)
        for label, mask in structure_masks(case, (half, half)).items():
            save_mask(root / "scratch" / f"fold{fold}" / "masks" / SCR_FOLDERS[label] / f"{stem}.gif", mask)
        age_txt = "?" if rng.random() < 0.03 else str(age)
        sex_txt = "male" if sex == "M" else "female"
        if nodule:
            x0, y0, x1, y1 = drawn.boxes[0][0]
            cx, cy = (x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale
            size_mm = max(x1 - x0, y1 - y0) * scale * JSRT_PIXEL_MM
            cln.append("\t".join([f"{stem}.IMG", str(int(rng.integers(1, 6))), f"{size_mm:.0f}", age_txt, sex_txt,
                                  str(int(round(cx))), str(int(round(cy))),
                                  "malignant" if rng.random() < 0.65 else "benign",
                                  ("l.upper lobe", "r.upper lobe", "l.lower lobe", "r.lower lobe")[int(rng.integers(4))],
                                  "lung cancer"]))
        else:
            cnn.append("\t".join([f"{stem}.IMG", age_txt, sex_txt, "non-nodule"]))
    write_text(root / "CLNDAT_EN.txt", "\r\n".join(cln) + "\r\n")
    write_text(root / "CNNDAT_EN.txt", "\r\n".join(cnn) + "\r\n")
    return root
