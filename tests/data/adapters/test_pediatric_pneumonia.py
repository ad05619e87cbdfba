from __future__ import annotations

import pytest

from arkx.data.adapters import check_images_exist, read_dataset
from arkx.data.adapters.pediatric_pneumonia import parse_name
from arkx.data.records import DatasetFormatError

from .conftest import touch

KAGGLE = {
    "train/NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-0427-0001.jpeg"],
    "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_6.jpeg"],
    "val/NORMAL": ["NORMAL2-IM-1427-0001.jpeg"],
    "val/PNEUMONIA": ["person1946_bacteria_4874.jpeg"],
    "test/NORMAL": ["IM-0001-0001.jpeg"],
    "test/PNEUMONIA": ["person100_virus_184.jpeg", "person101_bacteria_484.jpeg"],
}


def write_tree(base, tree):
    for folder, names in tree.items():
        for name in names:
            touch(base / folder / name)
    return base


def test_two_class_kaggle_layout(tmp_path):
    base = write_tree(tmp_path / "chest_xray", KAGGLE)
    touch(base / "train" / "NORMAL" / ".DS_Store")  # OS artefact: invisible, not even counted
    touch(base / "train" / "NORMAL" / "readme.txt")  # a real non-image file: skipped and counted
    rec = read_dataset("pediatric_pneumonia", tmp_path)  # the folder that holds chest_xray/
    assert len(rec) == 11 and rec.label_names == ("Pneumonia",) and rec.task.kind == "multilabel"
    by_id = dict(zip(rec.images["image_id"], rec.labels[:, 0]))
    assert by_id["train/NORMAL/IM-0115-0001"] == 0 and by_id["train/PNEUMONIA/person2_virus_6"] == 1
    assert rec.images["path"][0] == "chest_xray/train/NORMAL/IM-0115-0001.jpeg"
    pid = dict(zip(rec.images["image_id"], rec.images["patient_id"]))
    assert pid["train/NORMAL/IM-0115-0002"] == "IM-0115"
    assert pid["train/NORMAL/NORMAL2-IM-0427-0001"] == "NORMAL2-IM-0427"
    assert pid["train/PNEUMONIA/person1_bacteria_2"] == "person1"
    split = dict(zip(rec.images["image_id"], rec.images["split"]))
    assert all(split[i] == "test" for i in split if i.startswith("test/"))
    assert all(split[i] in ("train", "val") for i in split if not i.startswith("test/"))  # Kaggle val merged
    assert rec.notes["kaggle_val_images_merged_into_train"] == 2 and rec.notes["non_image_files_skipped"] == 1
    check_images_exist(rec)


def test_three_class_from_file_names(tmp_path):
    rec = read_dataset("pediatric_pneumonia", write_tree(tmp_path, KAGGLE), task="3class")
    assert rec.task.kind == "multiclass"
    assert rec.label_names == ("Normal", "Bacterial pneumonia", "Viral pneumonia")
    by_id = {i: tuple(row) for i, row in zip(rec.images["image_id"], rec.labels.tolist())}
    assert by_id["train/NORMAL/IM-0115-0001"] == (1, 0, 0)
    assert by_id["train/PNEUMONIA/person1_bacteria_1"] == (0, 1, 0)
    assert by_id["test/PNEUMONIA/person100_virus_184"] == (0, 0, 1)
    assert (rec.labels.sum(axis=1) == 1).all()


def test_val_carved_by_patient(tmp_path):
    tree = {"train/NORMAL": [f"IM-{p:04d}-{k:04d}.jpeg" for p in range(1, 80) for k in (1, 2)],
            "train/PNEUMONIA": [f"person{p}_bacteria_{p * 3 + k}.jpeg" for p in range(1, 80) for k in (0, 1)],
            "test/NORMAL": ["IM-9000-0001.jpeg"], "test/PNEUMONIA": ["person9000_virus_1.jpeg"]}
    rec = read_dataset("pediatric_pneumonia", write_tree(tmp_path, tree), val_fraction=0.2)
    assert (rec.images.groupby("patient_id")["split"].nunique() == 1).all()
    counts = rec.images["split"].value_counts()
    assert counts["test"] == 2 and 10 <= counts["val"] <= 70
    assert rec.notes["patient_ids_in_train_and_test"] == 0


def test_mendeley_names():
    assert parse_name("BACTERIA-1008087-0001") == ("1008087", "bacteria")
    assert parse_name("VIRUS-1000234-0002") == ("1000234", "virus")
    assert parse_name("NORMAL-1003233-0001") == ("1003233", "normal")
    assert parse_name("person12_virus_44") == ("person12", "virus")
    assert parse_name("scan_7") is None


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="train"):
        read_dataset("pediatric_pneumonia", tmp_path)
    base = write_tree(tmp_path / "a", KAGGLE)
    touch(base / "train" / "NORMAL" / "person5_virus_9.jpeg")
    with pytest.raises(DatasetFormatError, match=r"person5_virus_9.jpeg: a 'virus' file name in the NORMAL/ folder"):
        read_dataset("pediatric_pneumonia", base)
    base = write_tree(tmp_path / "b", KAGGLE)
    touch(base / "test" / "PNEUMONIA" / "scan 7.jpeg")
    with pytest.raises(DatasetFormatError, match=r"scan 7.jpeg: unrecognised file name"):
        read_dataset("pediatric_pneumonia", base)
    with pytest.raises(ValueError, match="task"):
        read_dataset("pediatric_pneumonia", write_tree(tmp_path / "c", KAGGLE), task="4class")
