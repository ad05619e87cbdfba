"""Shenzhen chest X-ray set (NLM, tuberculosis), as downloaded (``ChinaSet_AllFiles``).

Expected folder::

    ChinaSet_AllFiles/
        CXR_png/CHNCXR_0001_0.png          suffix _0 = normal, _1 = tuberculosis
        ClinicalReadings/CHNCXR_0001_0.txt first line: sex and age ("male 35yrs"), then the reading

One image per patient; task ``("Tuberculosis",)`` from the file-name suffix. Sex/age lines that cannot
be parsed give None/NaN and are counted in ``notes``. No official split: seeded patient-level split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..records import Records, Task
from ._common import child, read_clinical_readings, scan_tb_images, images_frame, patient_split
from .registry import AdapterOptions, register

IMAGE_DIR = "CXR_png"
READINGS_DIR = "ClinicalReadings"
_NAME = re.compile(r"^(CHNCXR_\d+)_([01])$")
# "male 35yrs", "Female  24 yrs", "M 45Y", "male 8 months", "female, 60"
_SEX_AGE = re.compile(
    r"^\s*(?P<sex>male|female|m|f)(?![a-z])[\s,:;]*(?:age[\s:]*)?"
    r"(?P<age>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]*)",
    re.IGNORECASE,
)
_UNIT_YEARS = {
    **{u: 1.0 for u in ("", "y", "yr", "yrs", "year", "years", "yo")},
    **{u: 1 / 12 for u in ("m", "mo", "month", "months")},
    **{u: 1 / 365.25 for u in ("d", "day", "days")},
}

LAYOUT = """\
ChinaSet_AllFiles/
  CXR_png/CHNCXR_0001_0.png          (_1 = tuberculosis)
  ClinicalReadings/CHNCXR_0001_0.txt (first line: "male 35yrs")"""


def parse_reading_line(line: str) -> tuple[str | None, float]:
    """(sex, age in years) from the first line of a clinical reading; (None, NaN) parts if unparseable."""
    match = _SEX_AGE.match(line or "")
    if not match:
        return None, float("nan")
    sex = "M" if match["sex"].lower().startswith("m") else "F"
    unit = match["unit"].lower()
    if match["age"] is None or unit not in _UNIT_YEARS:
        return sex, float("nan")
    return sex, float(match["age"]) * _UNIT_YEARS[unit]


def _parse_reading_file(text: str) -> tuple[str | None, float]:
    lines = text.splitlines()
    return parse_reading_line(lines[0] if lines else "")


@register("shenzhen", options=AdapterOptions, layout=LAYOUT,
          summary="Shenzhen TB set: Tuberculosis from the file name; sex/age from ClinicalReadings")
def read(root: Path, options: AdapterOptions) -> Records:
    image_dir = child(root, IMAGE_DIR)
    stems, tb, files = scan_tb_images(image_dir, _NAME, "shenzhen", "CHNCXR_0001_0.png")
    sexes, ages, no_reading, unparsed = read_clinical_readings(child(root, READINGS_DIR), stems, _parse_reading_file)
    patients = [_NAME.match(s)[1] for s in stems]
    images = images_frame(
        image_id=stems, path=[f"{image_dir.relative_to(root).as_posix()}/{f}" for f in files], patient_id=patients,
        split=patient_split(patients, options.split_seed), view=[None] * len(stems), sex=sexes, age=ages,
    )
    notes = {"split": f"seeded patient-level 70/10/20, seed {options.split_seed}",
             "view": "not recorded by the provider (frontal images)",
             "readings_missing": no_reading, "readings_sex_or_age_unparsed": int(unparsed)}
    labels = np.asarray(tb, dtype=np.float32)[:, None]
    return Records("shenzhen", root, images, Task("shenzhen", "multilabel", ("Tuberculosis",)), labels,
                   split_source="seeded-patient", notes=notes)
