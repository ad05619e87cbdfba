from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.adapters.vindr_cxr import ALL_LABELS, GLOBAL_LABELS
from arkx.data.records import DatasetFormatError

from .conftest import write_text, write_vindr

TRAIN = {  # three readers per image
    "img1": [{"Pneumonia": 1}, {"Pneumonia": 1}, {"COPD": 1}],  # Pneumonia 2/3, COPD 1/3
    "img2": [{"No finding": 1}] * 3,
    "img3": [{"Tuberculosis": 1, "Cardiomegaly": 1}] * 3,
    "img4": [{"Lung tumor": 1}, {}, {}],
}
TEST = {"t1": {"Other diseases": 1}, "t2": {"No finding": 1}}


def _y(rec, image_id, label):
    i = int(np.flatnonzero(rec.images["image_id"].to_numpy() == image_id)[0])
    return rec.labels[i, rec.label_names.index(label)]


@pytest.mark.parametrize("rule,pneumonia,copd,all3", [("majority", 1, 0, 1), ("any", 1, 1, 1), ("all", 0, 0, 1)])
def test_reader_aggregation(tmp_path, rule, pneumonia, copd, all3):
    rec = read_dataset("vindr_cxr", write_vindr(tmp_path, TRAIN, TEST), reader_aggregation=rule)
    assert _y(rec, "img1", "Pneumonia") == pneumonia and _y(rec, "img1", "COPD") == copd
    assert _y(rec, "img3", "Tuberculosis") == all3
    assert rule in rec.notes["reader_aggregation"]


def test_labels_splits_and_alias(tmp_path):
    rec = read_dataset("vindr_cxr", write_vindr(tmp_path, TRAIN, TEST))
    assert rec.label_names == GLOBAL_LABELS and len(rec) == 6
    assert _y(rec, "t1", "Other diseases") == 1  # test file spells it "Other disease"
    assert _y(rec, "t2", "No finding") == 1 and _y(rec, "t2", "Other diseases") == 0
    assert set(rec.split("test").images["image_id"]) == {"t1", "t2"}
    assert set(rec.images.loc[rec.images["split"] != "test", "image_id"]) == {"img1", "img2", "img3", "img4"}
    assert (rec.images["patient_id"] == rec.images["image_id"]).all()
    assert rec.images["path"].tolist()[0] == "train/img1.dicom" and rec.images["path"].tolist()[-1] == "test/t2.dicom"
    full = read_dataset("vindr_cxr", tmp_path, labels="all28")
    assert full.label_names == ALL_LABELS and len(ALL_LABELS) == 28
    assert _y(full, "img3", "Cardiomegaly") == 1


def test_boxes_keep_reader_and_skip_no_finding(tmp_path):
    rec = read_dataset("vindr_cxr", write_vindr(tmp_path, TRAIN, TEST))
    b = rec.boxes
    assert b["label"].tolist() == ["Cardiomegaly", "Aortic enlargement", "Nodule/Mass"]
    assert b["reader"].tolist()[:2] == ["R1", "R2"] and b["reader"].isna().tolist()[2]
    assert b.iloc[0][["x_min", "y_min", "x_max", "y_max"]].tolist() == [691.0, 1375.0, 1653.0, 1831.0]


def test_dicom_metadata(tmp_path):
    rec = read_dataset("vindr_cxr", write_vindr(tmp_path, TRAIN, TEST))
    assert rec.images["sex"].tolist() == ["M", "F", None, "M", "M", "F"]  # "O" -> None
    assert rec.images["age"].tolist() == [40.0, 41.0, 42.0, 43.0, 40.0, 41.0]  # "040Y"
    off = read_dataset("vindr_cxr", tmp_path, read_dicom_metadata=False)
    assert off.images["sex"].isna().all()


def test_val_split_by_image(tmp_path):
    train = {f"i{k}": [{}, {}, {}] for k in range(80)}
    rec = read_dataset("vindr_cxr", write_vindr(tmp_path, train, TEST, dicoms=False), read_dicom_metadata=False)
    assert 0 < len(rec.split("val")) < 30 and len(rec.split("test")) == 2


def test_rad_ID_spelling_accepted(tmp_path):
    rec = read_dataset("vindr_cxr", write_vindr(tmp_path, TRAIN, TEST, reader_col="rad_ID", dicoms=False),
                       read_dicom_metadata=False)
    assert len(rec) == 6


def test_errors(tmp_path):
    root = write_vindr(tmp_path, TRAIN, TEST, dicoms=False)
    text = (root / "annotations/image_labels_test.csv").read_text().splitlines()
    write_text(root / "annotations/image_labels_test.csv", [text[0], text[1], text[2][:-1] + "2"])
    with pytest.raises(DatasetFormatError, match=r"image_labels_test.csv row 3 column 'No finding'"):
        read_dataset("vindr_cxr", root, read_dicom_metadata=False)
    write_text(root / "annotations/image_labels_test.csv", [text[0].replace(",COPD", ",CPD"), *text[1:]])
    with pytest.raises(DatasetFormatError, match=r"image_labels_test.csv lacks label column 'COPD'"):
        read_dataset("vindr_cxr", root, read_dicom_metadata=False)
    (root / "annotations/image_labels_train.csv").unlink()
    with pytest.raises(DatasetFormatError, match="image_labels_train.csv"):
        read_dataset("vindr_cxr", root)


def test_image_in_train_and_test_is_an_error(tmp_path):
    root = write_vindr(tmp_path, TRAIN, {"img1": {}}, dicoms=False)
    with pytest.raises(DatasetFormatError, match="img1"):
        read_dataset("vindr_cxr", root, read_dicom_metadata=False)
