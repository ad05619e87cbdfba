from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.adapters.nih14 import NIH14_LABELS, parse_bbox_list, parse_data_entry
from arkx.data.records import DatasetFormatError

from .conftest import NIH_ENTRIES, NIH_HEADER, NIH_TEST, XRV_DATA, nih_row, write_nih14, write_text


def _row(rec, image_id):
    return int(np.flatnonzero(rec.images["image_id"].to_numpy() == image_id)[0])


def test_labels_splits_paths(tmp_path):
    rec = read_dataset("nih14", write_nih14(tmp_path))
    assert len(rec) == len(NIH_ENTRIES) and rec.label_names == NIH14_LABELS
    y = rec.labels
    i = _row(rec, "00000003_001")
    assert {NIH14_LABELS[j] for j in np.flatnonzero(y[i])} == {"Infiltration", "Mass", "Pleural_Thickening"}
    assert (y[_row(rec, "00000002_000")] == 0).all()  # No Finding = all 0
    assert not np.isnan(y).any()
    assert set(rec.split("test").images["image_id"] + ".png") == set(NIH_TEST)
    splits = {s: set(rec.split(s).images["patient_id"]) for s in ("train", "val", "test")}
    assert not (splits["train"] & splits["val"]) and not ((splits["train"] | splits["val"]) & splits["test"])
    assert rec.images["path"][0] == "images_001/images/00000001_000.png"
    assert rec.images["path"][1] == "images_002/images/00000001_001.png"
    assert all(p.is_file() for p in rec.absolute_paths())
    assert rec.images["sex"][_row(rec, "00000002_000")] == "F" and rec.images["view"][_row(rec, "00000003_000")] == "AP"
    assert rec.split_source == "official"


def test_validation_carved_from_train_val_by_patient(tmp_path):
    entries = [(f"{p:08d}_{k:03d}.png", "No Finding", p) for p in range(1, 61) for k in range(2)]
    rec = read_dataset("nih14", write_nih14(tmp_path, entries=entries, test=[e[0] for e in entries[:20]]))
    assert len(rec.split("test")) == 20 and len(rec.split("val")) > 0
    per_patient = rec.images.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()


def test_flat_images_and_old_metadata_file(tmp_path):
    rec = read_dataset("nih14", write_nih14(tmp_path, flat=True, old_file=True))
    assert rec.notes["metadata_file"] == "Data_Entry_2017.csv"
    assert rec.images["path"][0] == "images/00000001_000.png"
    assert all(p.is_file() for p in rec.absolute_paths())


def test_boxes_converted_and_infiltrate_renamed(tmp_path):
    bbox = ["00000003_001.png,Infiltrate,10.5,20,30,40", "00000001_000.png,Cardiomegaly,1,2,3,4"]
    rec = read_dataset("nih14", write_nih14(tmp_path, bbox=bbox))
    b = rec.boxes
    assert b["label"].tolist() == ["Infiltration", "Cardiomegaly"]
    assert b.iloc[0][["x_min", "y_min", "x_max", "y_max"]].tolist() == [10.5, 20.0, 40.5, 60.0]
    assert b["image_id"].tolist() == ["00000003_001", "00000001_000"]


def test_unknown_finding_names_row(tmp_path):
    entries = NIH_ENTRIES[:3] + [("00000009_000.png", "Cardiomegaly|Pneumonitis", 9)]
    with pytest.raises(DatasetFormatError, match=r"row 5 \(00000009_000.png\).*Pneumonitis"):
        read_dataset("nih14", write_nih14(tmp_path, entries=entries, test=[]))


def test_split_list_errors(tmp_path):
    root = write_nih14(tmp_path)
    write_text(root / "test_list.txt", [*NIH_TEST, "99999999_000.png"])
    with pytest.raises(DatasetFormatError, match=r"test_list.txt line 4.*99999999_000.png"):
        read_dataset("nih14", root)
    write_text(root / "test_list.txt", NIH_TEST[:-1])  # one image now in neither list
    with pytest.raises(DatasetFormatError, match="neither"):
        read_dataset("nih14", root)
    (root / "test_list.txt").unlink()
    with pytest.raises(DatasetFormatError, match="test_list.txt"):
        read_dataset("nih14", root)


def test_missing_metadata_and_column(tmp_path):
    with pytest.raises(DatasetFormatError, match="Data_Entry_2017_v2020.csv"):
        read_dataset("nih14", tmp_path)
    write_text(tmp_path / "Data_Entry_2017_v2020.csv",
               [NIH_HEADER.replace("Patient ID", "Patient"), nih_row("00000001_000.png", "Mass", 1)])
    with pytest.raises(DatasetFormatError, match="Patient ID"):
        read_dataset("nih14", tmp_path)


@pytest.mark.skipif(not (XRV_DATA / "Data_Entry_2017_v2020.csv.gz").is_file(),
                    reason="torchxrayvision label files absent")
def test_real_data_entry_and_boxes():
    frame, labels = parse_data_entry(XRV_DATA / "Data_Entry_2017_v2020.csv.gz")
    assert len(frame) == 112_120 and frame["Patient ID"].nunique() == 30_805
    published = {"Infiltration": 19_894, "Effusion": 13_317, "Atelectasis": 11_559, "Nodule": 6_331, "Mass": 5_782,
                 "Pneumothorax": 5_302, "Consolidation": 4_667, "Pleural_Thickening": 3_385, "Cardiomegaly": 2_776,
                 "Emphysema": 2_516, "Edema": 2_303, "Fibrosis": 1_686, "Pneumonia": 1_431, "Hernia": 227}  # fmt: skip
    assert {n: int(labels[:, j].sum()) for j, n in enumerate(NIH14_LABELS)} == published
    assert int((labels.sum(axis=1) == 0).sum()) == 60_361  # "No Finding"
    boxes = parse_bbox_list(XRV_DATA / "BBox_List_2017.csv.gz", set(frame["Image Index"]))
    assert len(boxes) == 984 and boxes["image_id"].nunique() == 880
    assert set(boxes["label"]) <= set(NIH14_LABELS) and "Infiltration" in set(boxes["label"])
    assert (boxes["x_max"] > boxes["x_min"]).all() and (boxes["y_max"] > boxes["y_min"]).all()
