from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import check_images_exist, read_dataset
from arkx.data.records import DatasetFormatError

from .conftest import touch, write_text

ROWS = [
    "path,patient,split,sex,age,view,Effusion,Cardiomegaly",
    "a/1.png,P1,train,Male,61,PA,1,0",
    "a/2.png,P1,train,Male,62,AP,1.0,-1",
    "b/3.png,P2,validate,female,40,PA,,0",
    "b/4.png,P3,valid,F,,PA,0,1",
    "c/5.png,P4,TEST,,33,LATERAL,0,0",
]
FULL = dict(csv="labels.csv", patient_column="patient", split_column="split", sex_column="sex", age_column="age",
            view_column="view")


def write(root, lines=ROWS, name="labels.csv"):
    write_text(root / name, lines)
    return root


def test_multilabel_with_metadata(tmp_path):
    root = write(tmp_path)
    for line in ROWS[1:]:
        touch(root / "imgs" / line.split(",")[0])
    rec = read_dataset("csv", root, image_root="imgs", **FULL)
    assert rec.label_names == ("Effusion", "Cardiomegaly")  # header order, every unused column
    np.testing.assert_array_equal(rec.labels, [[1, 0], [1, -1], [np.nan, 0], [0, 1], [0, 0]])
    assert rec.images["split"].tolist() == ["train", "train", "val", "val", "test"]
    assert rec.images["patient_id"].tolist() == ["P1", "P1", "P2", "P3", "P4"]
    assert rec.images["sex"].tolist() == ["M", "M", "F", "F", None]
    np.testing.assert_array_equal(rec.images["age"].to_numpy(), [61, 62, 40, np.nan, 33])
    assert rec.images["view"].tolist() == ["PA", "AP", "PA", "PA", "LATERAL"]
    assert rec.images["path"][0] == "imgs/a/1.png" and rec.images["image_id"][0] == "a/1.png"
    assert rec.split_source == "official"
    check_images_exist(rec)


def test_explicit_label_columns_and_seeded_split(tmp_path):
    lines = ["path,patient,Effusion,Cardiomegaly,notes"] + [f"i{k}.png,P{k // 2},{k % 2},0,x" for k in range(200)]
    root = write(tmp_path, lines)
    rec = read_dataset("csv", root, csv="labels.csv", patient_column="patient", label_columns=["Cardiomegaly"])
    assert rec.label_names == ("Cardiomegaly",) and rec.split_source == "seeded-patient"
    assert set(rec.images["split"]) == {"train", "val", "test"}
    assert (rec.images.groupby("patient_id")["split"].nunique() == 1).all()
    with pytest.raises(DatasetFormatError, match=r"row 2 column 'notes'"):  # default: every unused column
        read_dataset("csv", root, csv="labels.csv", patient_column="patient")


def test_multiclass(tmp_path):
    lines = ["file,finding,split", "x1.png,normal,train", "x2.png,covid,train", "x3.png,pneumonia,test",
             "x4.png,,test"]
    root = write(tmp_path, lines)
    rec = read_dataset("csv", root, csv="labels.csv", path_column="file", kind="multiclass", label_column="finding",
                       split_column="split")
    assert rec.task.kind == "multiclass" and rec.label_names == ("covid", "normal", "pneumonia")  # sorted
    np.testing.assert_array_equal(rec.labels[:3], [[0, 1, 0], [1, 0, 0], [0, 0, 1]])
    assert np.isnan(rec.labels[3]).all()
    assert "val" in rec.notes and (rec.images["split"][2:] == "test").all()  # no val rows: carved from train
    rec = read_dataset("csv", root, csv="labels.csv", path_column="file", kind="multiclass", label_column="finding",
                       classes=["normal", "pneumonia", "covid"])
    assert rec.label_names == ("normal", "pneumonia", "covid") and rec.labels[1].tolist() == [0, 0, 1]
    with pytest.raises(DatasetFormatError, match=r"row 4 column 'finding': class 'pneumonia' is not one of"):
        read_dataset("csv", root, csv="labels.csv", path_column="file", kind="multiclass", label_column="finding",
                     classes=["normal", "covid"])


def test_errors_name_file_row_and_column(tmp_path):
    with pytest.raises(DatasetFormatError, match="labels.csv"):
        read_dataset("csv", tmp_path, csv="labels.csv")
    root = write(tmp_path)
    with pytest.raises(DatasetFormatError, match=r"no label column\(s\) \['Edema'\].*columns are \['path', 'patient'"):
        read_dataset("csv", root, csv="labels.csv", label_columns=["Effusion", "Edema"])
    with pytest.raises(DatasetFormatError, match=r"no column 'subject' \(option patient_column\)"):
        read_dataset("csv", root, csv="labels.csv", patient_column="subject", label_columns=["Effusion"])
    bad = ROWS[:3] + ["b/3.png,P2,holdout,female,40,PA,,0"]
    write(tmp_path, bad)
    with pytest.raises(DatasetFormatError, match=r"labels.csv row 4 column 'split': split 'holdout'"):
        read_dataset("csv", tmp_path, **FULL)
    write(tmp_path, ROWS[:2] + ["a/9.png,P1,train,Male,61,PA,2,0"])
    with pytest.raises(DatasetFormatError, match=r"labels.csv row 3 column 'Effusion': value '2'"):
        read_dataset("csv", tmp_path, **FULL)
    write(tmp_path, ROWS[:2] + ROWS[1:2])
    with pytest.raises(DatasetFormatError, match=r"row 3 column 'path': image 'a/1.png' is listed twice"):
        read_dataset("csv", tmp_path, **FULL)
    with pytest.raises(ValueError, match="csv"):
        read_dataset("csv", tmp_path)  # the csv option is required
    with pytest.raises(DatasetFormatError, match="label_column"):
        read_dataset("csv", tmp_path, csv="labels.csv", kind="multiclass")
