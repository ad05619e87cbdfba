"""NIH / NLM Montgomery County chest X-ray set (tuberculosis, with manual lung masks), as downloaded.

Expected folder::

    MontgomerySet/
        CXR_png/MCUCXR_0001_0.png             suffix _0 = normal, _1 = tuberculosis (4020 x 4892 or 4892 x 4020)
        ManualMask/leftMask/MCUCXR_0001_0.png  binary lung masks at the image resolution (nonzero = inside)
        ManualMask/rightMask/MCUCXR_0001_0.png
        ClinicalReadings/MCUCXR_0001_0.txt     "Patient's Sex: M" / "Patient's Age: 045Y" lines, then the reading

Task ``("Tuberculosis",)`` from the file-name suffix. One image per patient; no official split, so a
seeded patient-level split. Masks ``Left Lung`` / ``Right Lung`` from ``leftMask`` / ``rightMask``.

Uncertainty: NLM does not document whether ``leftMask`` is the patient's left lung (image right) or
the lung on the image left; we follow the naming as the patient's side (the convention of the SCR and
CheXmask labels) -- check a mask before relying on the side. Mask files named ``<stem>_mask.png`` (as
some re-distributions name them) are accepted too.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..records import DatasetFormatError, Records, Task
from ._common import (child, images_frame, list_dir, normalise_sex, parse_age, patient_split, read_clinical_readings,
                      scan_tb_images)
from .registry import AdapterOptions, register

IMAGE_DIR = "CXR_png"
READINGS_DIR = "ClinicalReadings"
MASK_DIRS = {"Left Lung": "ManualMask/leftMask", "Right Lung": "ManualMask/rightMask"}
_NAME = re.compile(r"^(MCUCXR_\d+)_([01])$")
_SEX = re.compile(r"^\s*Patient'?s\s+Sex\s*:\s*(\S*)", re.IGNORECASE | re.MULTILINE)
_AGE = re.compile(r"^\s*Patient'?s\s+Age\s*:\s*(\S*)", re.IGNORECASE | re.MULTILINE)

LAYOUT = """\
MontgomerySet/
  CXR_png/MCUCXR_0001_0.png               (_1 = tuberculosis)
  ManualMask/leftMask/MCUCXR_0001_0.png, ManualMask/rightMask/MCUCXR_0001_0.png
  ClinicalReadings/MCUCXR_0001_0.txt      ("Patient's Sex: M", "Patient's Age: 045Y")"""


def parse_reading(text: str) -> tuple[str | None, float]:
    """(sex, age in years) from a Montgomery clinical reading; None / NaN where absent or unparseable."""
    sex_m, age_m = _SEX.search(text or ""), _AGE.search(text or "")
    sex = normalise_sex([sex_m[1]])[0] if sex_m else None
    age = parse_age(age_m[1]) if age_m and age_m[1] else float("nan")
    return sex, age


@register("montgomery", options=AdapterOptions, layout=LAYOUT,
          summary="Montgomery County TB set: Tuberculosis from the file name, left/right lung masks")
def read(root: Path, options: AdapterOptions) -> Records:
    image_dir = child(root, IMAGE_DIR)
    stems, tb, files = scan_tb_images(image_dir, _NAME, "montgomery", "MCUCXR_0001_0.png")
    mask_dirs = {label: child(root, d) for label, d in MASK_DIRS.items()}
    if not any(d.is_dir() for d in mask_dirs.values()):
        raise DatasetFormatError(
            f"montgomery: expected mask folders {[str(root / d) for d in MASK_DIRS.values()]} (none found)"
        )
    # one listing per mask folder, names matched case-insensitively (.png / .PNG), OS artefacts ignored
    mask_files = {label: {p.name.lower(): p for p in list_dir(d)} if d.is_dir() else {}
                  for label, d in mask_dirs.items()}
    mask_rows = []
    missing_masks = 0
    for stem in stems:
        for label, files_in in mask_files.items():
            names = (f"{stem}.png", f"{stem}_mask.png")
            hit = next((files_in[n.lower()].relative_to(root).as_posix() for n in names if n.lower() in files_in), None)
            if hit is None:
                missing_masks += 1
                continue
            mask_rows.append({"image_id": stem, "label": label, "kind": "file", "path": hit})
    sexes, ages, no_reading, unparsed = read_clinical_readings(child(root, READINGS_DIR), stems, parse_reading)
    patients = [_NAME.match(s)[1] for s in stems]
    images = images_frame(
        image_id=stems, path=[f"{image_dir.relative_to(root).as_posix()}/{f}" for f in files], patient_id=patients,
        split=patient_split(patients, options.split_seed), view=["PA"] * len(stems), sex=sexes, age=ages,
    )
    notes = {"split": f"seeded patient-level 70/10/20, seed {options.split_seed}",
             "view": "PA (the set is of posteroanterior films)",
             "readings_missing": no_reading, "readings_sex_or_age_unparsed": int(unparsed),
             "masks_missing": missing_masks,
             "mask_sides": "leftMask -> Left Lung, rightMask -> Right Lung (taken as the patient's sides; "
                           "NLM does not document the convention)"}
    labels = np.asarray(tb, dtype=np.float32)[:, None]
    masks = pd.DataFrame(mask_rows, columns=["image_id", "label", "kind", "path"])
    return Records("montgomery", root, images, Task("montgomery", "multilabel", ("Tuberculosis",)), labels,
                   masks=masks, split_source="seeded-patient", notes=notes, mask_label_names=tuple(MASK_DIRS))
