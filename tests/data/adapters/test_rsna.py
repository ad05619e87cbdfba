from __future__ import annotations

import zipfile

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.adapters.rsna import RSNA_CLASSES, parse_train_labels
from arkx.data.records import DatasetFormatError

from .conftest import RSNA_ROWS, XRV_DATA, write_rsna, write_text


def test_one_record_per_patient_three_class(tmp_path):
    rec = read_dataset("rsna", write_rsna(tmp_path))
    assert rec.images["image_id"].tolist() == ["p-normal", "p-other", "p-op", "p-op2"]
    assert rec.task.kind == "multiclass" and rec.label_names == RSNA_CLASSES
    assert rec.label_names == ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
    np.testing.assert_array_equal(rec.labels, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert rec.images["path"][2] == "stage_2_train_images/p-op.dcm"
    assert rec.split_source == "seeded-patient"


def test_opacity_task(tmp_path):
    rec = read_dataset("rsna", write_rsna(tmp_path), task="opacity")
    assert rec.task.kind == "multilabel" and rec.label_names == ("Lung Opacity",)
    assert rec.labels[:, 0].tolist() == [0, 0, 1, 1]


def test_boxes(tmp_path):
    rec = read_dataset("rsna", write_rsna(tmp_path))
    b = rec.boxes
    assert b["image_id"].tolist() == ["p-op", "p-op", "p-op2"] and set(b["label"]) == {"Lung Opacity"}
    assert b.iloc[0][["x_min", "y_min", "x_max", "y_max"]].tolist() == [264.0, 152.0, 477.0, 531.0]


def test_dicom_header_metadata(tmp_path):
    root = write_rsna(tmp_path)
    rec = read_dataset("rsna", root)
    assert rec.images["sex"].tolist() == ["M", "F", "M", "F"]
    assert rec.images["age"].tolist() == [30.0, 31.0, 32.0, 33.0]  # RSNA writes PatientAge as "51"
    assert rec.images["view"].tolist() == ["PA", "AP", "PA", "AP"]
    off = read_dataset("rsna", root, read_dicom_metadata=False)
    assert off.images["sex"].tolist() == [None] * 4 and off.images["age"].isna().all()


def test_patient_split_seeded_and_disjoint(tmp_path):
    rec = read_dataset("rsna", write_rsna(tmp_path, n_extra_normals=60, dicoms=False), read_dicom_metadata=False,
                       split_seed=3)
    counts = rec.images["split"].value_counts()
    assert set(counts.index) == {"train", "val", "test"} and counts["train"] > counts["test"] > 0
    again = read_dataset("rsna", tmp_path, read_dicom_metadata=False, split_seed=3)
    assert again.images["split"].tolist() == rec.images["split"].tolist()


def test_target_class_inconsistency_names_patient(tmp_path):
    rows = list(RSNA_ROWS) + [("p-bad", "1", "2", "3", "4", 1, "Normal")]
    with pytest.raises(DatasetFormatError, match="p-bad"):
        read_dataset("rsna", write_rsna(tmp_path, rows=rows, dicoms=False), read_dicom_metadata=False)


def test_box_without_target_and_bad_target(tmp_path):
    rows = list(RSNA_ROWS) + [("p-nobox", "", "", "", "", 1, "Lung Opacity")]
    with pytest.raises(DatasetFormatError, match=r"row 7 \(patientId p-nobox\)"):
        read_dataset("rsna", write_rsna(tmp_path, rows=rows, dicoms=False))
    rows = list(RSNA_ROWS) + [("p-two", "", "", "", "", 2, "Normal")]
    with pytest.raises(DatasetFormatError, match=r"stage_2_train_labels.csv row 7 column 'Target'"):
        read_dataset("rsna", write_rsna(tmp_path, rows=rows, dicoms=False))


def test_missing_class_file_or_patient(tmp_path):
    root = write_rsna(tmp_path, dicoms=False)
    write_text(root / "stage_2_detailed_class_info.csv", ["patientId,class", "p-normal,Normal"])
    with pytest.raises(DatasetFormatError, match="p-other"):
        read_dataset("rsna", root)
    (root / "stage_2_detailed_class_info.csv").unlink()
    with pytest.raises(DatasetFormatError, match="stage_2_detailed_class_info.csv"):
        read_dataset("rsna", root)


@pytest.mark.skipif(not (XRV_DATA / "kaggle_stage_2_train_labels.csv.zip").is_file(),
                    reason="torchxrayvision label files absent")
def test_real_stage_2_train_labels(tmp_path):
    with zipfile.ZipFile(XRV_DATA / "kaggle_stage_2_train_labels.csv.zip") as z:
        (tmp_path / "stage_2_train_labels.csv").write_bytes(z.read("stage_2_train_labels.csv"))
    patients, boxes = parse_train_labels(tmp_path / "stage_2_train_labels.csv")
    assert len(patients) == 26_684
    assert len(boxes) + int((patients["Target"] == 0).sum()) == 30_227  # label rows
    assert len(boxes) == 9_555  # positive rows (one per box)
    assert int((patients["Target"] == 1).sum()) == 6_012  # positive patients
    assert boxes["image_id"].nunique() == 6_012
