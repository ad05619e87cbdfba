from __future__ import annotations

import math

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.adapters.montgomery import parse_reading
from arkx.data.records import DatasetFormatError

from .conftest import touch, write_text


def write_montgomery(tmp, readings: dict[str, str | None], masks=("leftMask", "rightMask"), mask_suffix=".png"):
    root = tmp / "MontgomerySet"
    for stem, text in readings.items():
        touch(root / "CXR_png" / f"{stem}.png")
        for m in masks:
            touch(root / "ManualMask" / m / f"{stem}{mask_suffix}")
        if text is not None:
            write_text(root / "ClinicalReadings" / f"{stem}.txt", text.split("\n"))
    touch(root / "CXR_png" / "Thumbs.db")
    return root


READINGS = {
    "MCUCXR_0001_0": "Patient's Sex: M\nPatient's Age: 045Y\nnormal",
    "MCUCXR_0002_0": "Patient's Sex: F\nPatient's Age: 008M\nnormal",
    "MCUCXR_0003_1": "Patient's Sex: O\nPatient's Age: 070Y\nright upper TB",
    "MCUCXR_0004_1": None,
}


def test_labels_masks_readings(tmp_path):
    rec = read_dataset("montgomery", write_montgomery(tmp_path, READINGS))
    assert rec.images["image_id"].tolist() == list(READINGS)
    assert rec.label_names == ("Tuberculosis",) and rec.labels[:, 0].tolist() == [0, 0, 1, 1]
    assert rec.images["sex"].tolist() == ["M", "F", None, None]
    np.testing.assert_allclose(rec.images["age"].to_numpy()[:3], [45, 8 / 12, 70])
    assert math.isnan(rec.images["age"][3])
    assert rec.notes["readings_missing"] == 1 and rec.notes["readings_sex_or_age_unparsed"] == 1
    m = rec.masks
    assert len(m) == 8 and (m["kind"] == "file").all()
    row = m[(m.image_id == "MCUCXR_0003_1") & (m.label == "Left Lung")].iloc[0]
    assert row["path"] == "ManualMask/leftMask/MCUCXR_0003_1.png"
    assert set(m[m.label == "Right Lung"]["path"].str.split("/").str[1]) == {"rightMask"}
    assert rec.images["patient_id"][0] == "MCUCXR_0001" and rec.split_source == "seeded-patient"


def test_mask_suffix_and_missing_masks(tmp_path):
    rec = read_dataset("montgomery", write_montgomery(tmp_path, READINGS, masks=("leftMask",), mask_suffix="_mask.png"))
    assert len(rec.masks) == 4 and set(rec.masks["label"]) == {"Left Lung"}
    assert rec.masks["path"][0] == "ManualMask/leftMask/MCUCXR_0001_0_mask.png"
    assert rec.notes["masks_missing"] == 4


@pytest.mark.parametrize("text,sex,age", [("Patient's Sex: M\nPatient's Age: 045Y", "M", 45),
                                          ("Patient's Sex: F\nPatient's Age: 32Y\nnormal", "F", 32),
                                          ("Patients Sex: f\r\nPatients Age: 050Y", "F", 50),
                                          ("Patient's Sex: M", "M", None), ("", None, None)])
def test_parse_reading(text, sex, age):
    s, a = parse_reading(text)
    assert s == sex and (math.isnan(a) if age is None else a == age)


def test_seeded_split(tmp_path):
    root = write_montgomery(tmp_path, {f"MCUCXR_{i:04d}_{i % 2}": "Patient's Sex: M" for i in range(1, 81)})
    a = read_dataset("montgomery", root, split_seed=0).images["split"]
    assert set(a) == {"train", "val", "test"}
    assert a.tolist() != read_dataset("montgomery", root, split_seed=3).images["split"].tolist()


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="CXR_png"):
        read_dataset("montgomery", tmp_path)
    root = write_montgomery(tmp_path, {"MCUCXR_0001_0": None}, masks=())
    with pytest.raises(DatasetFormatError, match="mask folders"):
        read_dataset("montgomery", root)
    root = write_montgomery(tmp_path, {"MCUCXR_0001_0": None})
    touch(root / "CXR_png" / "MCUCXR_0002_2.png")
    with pytest.raises(DatasetFormatError, match="MCUCXR_0002_2.png"):
        read_dataset("montgomery", root)
