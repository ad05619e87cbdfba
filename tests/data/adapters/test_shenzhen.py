from __future__ import annotations

import math

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.adapters.shenzhen import parse_reading_line
from arkx.data.records import DatasetFormatError

from .conftest import touch, write_text


def write_shenzhen(tmp, readings: dict[str, str]):
    root = tmp / "ChinaSet_AllFiles"
    for stem, first_line in readings.items():
        touch(root / "CXR_png" / f"{stem}.png")
        if first_line is not None:
            write_text(root / "ClinicalReadings" / f"{stem}.txt", [first_line, "normal"])
    touch(root / "CXR_png" / "Thumbs.db")
    return root


READINGS = {"CHNCXR_0001_0": "male 35yrs", "CHNCXR_0002_0": "Female  24 yrs", "CHNCXR_0003_1": "M 45Y",
            "CHNCXR_0004_1": "female 8month", "CHNCXR_0005_1": "unknown", "CHNCXR_0006_0": None}


def test_labels_sex_age_and_notes(tmp_path):
    rec = read_dataset("shenzhen", write_shenzhen(tmp_path, READINGS))
    assert rec.images["image_id"].tolist() == list(READINGS)
    assert rec.label_names == ("Tuberculosis",) and rec.labels[:, 0].tolist() == [0, 0, 1, 1, 1, 0]
    assert rec.images["sex"].tolist() == ["M", "F", "M", "F", None, None]
    np.testing.assert_allclose(rec.images["age"].to_numpy()[:4], [35, 24, 45, 8 / 12])
    assert rec.images["age"].isna().tolist()[4:] == [True, True]
    assert rec.notes["readings_sex_or_age_unparsed"] == 1 and rec.notes["readings_missing"] == 1
    assert rec.images["path"][0] == "CXR_png/CHNCXR_0001_0.png"
    assert rec.images["patient_id"][0] == "CHNCXR_0001"
    assert rec.split_source == "seeded-patient"


@pytest.mark.parametrize("line,sex,age", [("male 35yrs", "M", 35), ("Female  24 yrs", "F", 24), ("M 45Y", "M", 45),
                                          ("female, 60", "F", 60), ("Male 1yr", "M", 1), ("male", "M", None),
                                          ("", None, None), ("35 yrs", None, None)])
def test_parse_reading_line(line, sex, age):
    s, a = parse_reading_line(line)
    assert s == sex
    assert (math.isnan(a) if age is None else a == age)


def test_seeded_split(tmp_path):
    readings = {f"CHNCXR_{i:04d}_{i % 2}": "male 30yrs" for i in range(1, 101)}
    root = write_shenzhen(tmp_path, readings)
    a = read_dataset("shenzhen", root, split_seed=0).images["split"].value_counts()
    assert set(a.index) == {"train", "val", "test"} and a["train"] > 50
    assert (read_dataset("shenzhen", root, split_seed=0).images["split"].tolist()
            != read_dataset("shenzhen", root, split_seed=5).images["split"].tolist())


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="CXR_png"):
        read_dataset("shenzhen", tmp_path)
    root = write_shenzhen(tmp_path, {"CHNCXR_0001_0": "male 3yrs"})
    touch(root / "CXR_png" / "CHNCXR_0002_x.png")
    with pytest.raises(DatasetFormatError, match="CHNCXR_0002_x.png"):
        read_dataset("shenzhen", root)
