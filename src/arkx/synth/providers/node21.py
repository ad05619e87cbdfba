"""Synthetic NODE21 (read by :mod:`arkx.data.adapters.node21`): ``cxr_images/proccessed_data/images/<k>.mha``
(uint16 MetaImage) and ``metadata.csv`` (one row per nodule box, one label-0 row per image without). Masks
and boxes come from the pixels the finding changed (see :mod:`arkx.synth.annotations`);
``generate_node21(rng, n, size)`` returns the :class:`~arkx.synth.annotations.SynthImage` list the writer
writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.mha import write_mha
from ..anatomy import Case, Finding, Site
from ..annotations import SynthImage, draw_labelled
from ..files import write_csv
from ..sampling import (
    draw_seed,
    sample_positive,
)

#: acquisition look of this dataset
SITE = Site("node21", gamma=1.0, contrast=1.0, offset=0.0, noise=0.01, blur=0.4, marker=None)


def generate_node21(rng, n: int, size: int) -> list[SynthImage]:
    site = SITE
    pos = sample_positive(rng, n, 0.5)
    out = []
    for k in range(n):
        findings: tuple[Finding, ...] = (Finding("nodule", float(rng.uniform(0.8, 1.0))),) if pos[k] else ()
        for _ in range(4):
            case = Case("M" if rng.random() < 0.5 else "F", "PA", findings, draw_seed(rng), draw_seed(rng))
            image, drawn = draw_labelled(case, ["Nodule"] * len(findings), (size, size), site)
            if not pos[k] or drawn:
                break
        out.append(SynthImage(f"{k}.mha", image, case, drawn))
    return out


def write_node21(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``cxr_images/proccessed_data/images/<k>.mha`` (uint16 MetaImage) and ``metadata.csv``
    (``img_name,x,y,width,height,label``; one row per nodule, one label-0 row per image without)."""
    root = folder
    data = root / "cxr_images" / "proccessed_data"
    rows = []
    for im in generate_node21(rng, n, size):
        write_mha(data / "images" / im.image_id, np.round(np.clip(im.image, 0, 1) * 4095).astype(np.uint16),
                  spacing=(0.2, 0.2))
        if not im.findings:
            rows.append([im.image_id, "0", "0", "0", "0", "0"])
        for _, (x0, y0, x1, y1), _ in im.findings:
            rows.append([im.image_id, str(int(x0)), str(int(y0)), str(int(x1 - x0)), str(int(y1 - y0)), "1"])
    write_csv(data / "metadata.csv", ("img_name", "x", "y", "width", "height", "label"), rows)
    return root
