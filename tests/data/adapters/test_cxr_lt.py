from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import check_images_exist, read_dataset
from arkx.data.adapters.cxr_lt import CXR_LT_2023_LABELS
from arkx.data.records import DatasetFormatError

from .conftest import touch, write_text

HEADER = "dicom_id,subject_id,study_id," + ",".join(CXR_LT_2023_LABELS)
FPATH_HEADER = "dicom_id,subject_id,study_id,fpath," + ",".join(CXR_LT_2023_LABELS)


def row(dicom: str, subject: int, study: int, positives=(), fpath: str | None = None) -> str:
    values = ["1" if name in positives else "0" for name in CXR_LT_2023_LABELS]
    head = [dicom, str(subject), str(study)] + ([fpath] if fpath is not None else [])
    return ",".join(head + values)


def write_cxr_lt(root, dev_labeled=True, test_labeled=True, images=True):
    train = [row("d-a1", 10000032, 50000001, ("Cardiomegaly", "Tortuous Aorta")),
             row("d-a2", 10000032, 50000001, ("Cardiomegaly", "Tortuous Aorta")),
             row("d-b1", 10000764, 50000002, ("No Finding",)),
             row("d-c1", 11000001, 50000003, ("Pneumoperitoneum", "Pleural Effusion"))]
    dev = [row("d-d1", 12000001, 50000004, ("Hernia",))]
    test = [row("d-e1", 13000001, 50000005, ("Subcutaneous Emphysema",)),
            row("d-e2", 13000001, 50000006, ("No Finding",))]
    write_text(root / "train.csv", [HEADER, *train])
    if dev_labeled:
        write_text(root / "development.csv", [HEADER, *dev])
    else:
        write_text(root / "development.csv", ["dicom_id,subject_id,study_id", "d-d1,12000001,50000004"])
    write_text(root / "test.csv", [HEADER, *test] if test_labeled else
               ["dicom_id,subject_id,study_id", "d-e1,13000001,50000005", "d-e2,13000001,50000006"])
    if images:
        rec = read_dataset("cxr_lt", root)
        for p in rec.images["path"]:
            touch(root / p)
    return root


def test_labels_from_header_splits_and_paths(tmp_path):
    rec = read_dataset("cxr_lt", write_cxr_lt(tmp_path))
    assert rec.label_names == CXR_LT_2023_LABELS and len(rec.label_names) == 26
    assert rec.images["image_id"].tolist() == ["d-a1", "d-a2", "d-b1", "d-c1", "d-d1", "d-e1", "d-e2"]
    assert rec.images["split"].tolist() == ["train"] * 4 + ["val"] + ["test"] * 2
    assert rec.images["path"][0] == "files/p10/p10000032/s50000001/d-a1.jpg"
    assert rec.images["patient_id"].tolist()[:3] == ["10000032", "10000032", "10000764"]
    col = {name: j for j, name in enumerate(rec.label_names)}
    assert rec.labels[0, col["Cardiomegaly"]] == 1 and rec.labels[0, col["Tortuous Aorta"]] == 1
    assert rec.labels[0].sum() == 2
    assert rec.labels[3, col["Pneumoperitoneum"]] == 1 and rec.labels[4, col["Hernia"]] == 1
    assert rec.labels[2, col["No Finding"]] == 1
    assert rec.split_source == "official" and rec.notes["patients_in_more_than_one_split"] == 0
    check_images_exist(rec)


def test_label_columns_follow_the_file_not_a_fixed_list(tmp_path):
    # a different class set and order (e.g. the 2024 release) and an fpath column
    write_text(tmp_path / "train.csv", ["dicom_id,subject_id,study_id,fpath,Kyphosis,Adenopathy",
                                        "x1,10000001,50000001,files/p10/p10000001/s50000001/x1.jpg,1,0",
                                        "x2,10000002,50000002,"
                                        "/data/mimic-cxr-jpg/2.0.0/files/p10/p10000002/s5/x2.jpg,0,1"])
    write_text(tmp_path / "test.csv", ["dicom_id,subject_id,study_id,fpath,Adenopathy,Kyphosis",
                                       "x3,10000003,50000003,files/p10/p10000003/s50000003/x3.jpg,1,0"])
    rec = read_dataset("cxr_lt", tmp_path)
    assert rec.label_names == ("Kyphosis", "Adenopathy")
    np.testing.assert_array_equal(rec.labels, [[1, 0], [0, 1], [0, 1]])  # picked by name in test.csv
    assert rec.images["path"][1] == "files/p10/p10000002/s5/x2.jpg"
    assert set(rec.images["split"]) <= {"train", "val", "test"} and rec.images["split"][2] == "test"
    assert "val" in rec.notes  # no development file: carved from train


def test_unlabeled_split_files_give_nan(tmp_path):
    rec = read_dataset("cxr_lt", write_cxr_lt(tmp_path, dev_labeled=False, test_labeled=False, images=False))
    assert np.isnan(rec.split("val").labels).all() and np.isnan(rec.split("test").labels).all()
    assert not np.isnan(rec.split("train").labels).any()
    assert rec.notes["splits_without_labels"] == {"val": "development.csv", "test": "test.csv"}


def test_labeled_file_preferred_and_images_root(tmp_path):
    root = write_cxr_lt(tmp_path / "cxr-lt", dev_labeled=False, images=False)
    write_text(root / "development_labeled.csv", [HEADER, row("d-d1", 12000001, 50000004, ("Hernia",))])
    mimic = tmp_path / "mimic-cxr-jpg" / "2.0.0"
    mimic.mkdir(parents=True)
    rec = read_dataset("cxr_lt", root, images_root="../mimic-cxr-jpg/2.0.0")
    assert rec.root == root / "../mimic-cxr-jpg/2.0.0"
    assert rec.split("val").labels[0, CXR_LT_2023_LABELS.index("Hernia")] == 1
    assert rec.notes["label_files"]["val"] == "development_labeled.csv"
    with pytest.raises(DatasetFormatError, match="images_root"):
        read_dataset("cxr_lt", root, images_root="nowhere")


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="train.csv"):
        read_dataset("cxr_lt", tmp_path)
    root = write_cxr_lt(tmp_path / "a", images=False)
    bad = row("d-x", 14000000, 50000009).split(",")
    bad[3 + CXR_LT_2023_LABELS.index("Edema")] = "yes"
    write_text(root / "test.csv", [HEADER, ",".join(bad)])
    with pytest.raises(DatasetFormatError, match=r"test.csv row 2 column 'Edema'"):
        read_dataset("cxr_lt", root)
    root = write_cxr_lt(tmp_path / "b", images=False)
    write_text(root / "development.csv", ["dicom_id,subject_id,study_id,Atelectasis,Other", "q,1,2,0,1"])
    with pytest.raises(DatasetFormatError, match=r"development.csv label columns differ.*extra \['Other'\]"):
        read_dataset("cxr_lt", root)
    root = write_cxr_lt(tmp_path / "c", images=False)
    write_text(root / "test.csv", [HEADER, row("d-a1", 10000032, 50000001)])
    with pytest.raises(DatasetFormatError, match=r"test.csv row 2: dicom_id 'd-a1' also appears in train.csv row 2"):
        read_dataset("cxr_lt", root)
    root = write_cxr_lt(tmp_path / "d", images=False)
    write_text(root / "test.csv", [HEADER, row("d-z", 10000032, 50000001).replace("10000032", "p100")])
    with pytest.raises(DatasetFormatError, match=r"row 2 column 'subject_id'"):
        read_dataset("cxr_lt", root)
