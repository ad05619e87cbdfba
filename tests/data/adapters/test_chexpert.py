from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.adapters.chexpert import CHEXPERT_LABELS, parse_label_csv
from arkx.data.records import DatasetFormatError

from .conftest import CHEXPERT_HEADER, XRV_DATA, write_chexpert, write_text


def test_counts_splits_and_paths(tmp_path):
    root = write_chexpert(tmp_path, n_train_patients=30)
    rec = read_dataset("chexpert", root)
    assert len(rec) == 62
    assert rec.label_names == CHEXPERT_LABELS
    assert rec.task.kind == "multilabel"
    # official valid.csv is the test split, exactly
    test = rec.split("test")
    assert set(test.images["patient_id"]) == {"patient64541", "patient64542"}
    assert len(test) == 2
    # val is carved from train by patient; no patient in two splits
    by_split = {s: set(rec.split(s).images["patient_id"]) for s in ("train", "val", "test")}
    assert by_split["val"], "seeded val split should not be empty with 30 patients"
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert len(rec.split("train")) + len(rec.split("val")) == 60
    # paths are relative to the root (shipped folder name stripped) and exist
    assert rec.images["path"][0] == "train/patient00001/study1/view1_frontal.jpg"
    assert rec.images["image_id"][0] == "train/patient00001/study1/view1_frontal"
    assert all(p.is_file() for p in rec.absolute_paths())


def test_split_depends_on_seed_only(tmp_path):
    root = write_chexpert(tmp_path, n_train_patients=40)
    a = read_dataset("chexpert", root, split_seed=1).images["split"].tolist()
    assert a == read_dataset("chexpert", root, split_seed=1).images["split"].tolist()
    assert a != read_dataset("chexpert", root, split_seed=2).images["split"].tolist()


def test_raw_labels_views_sex_age(tmp_path):
    rec = read_dataset("chexpert", write_chexpert(tmp_path, n_train_patients=3))
    y = rec.labels[0]  # patient 1: index 1 -> 1, index 4 -> -1 (kept raw), index 6 -> 0, rest blank
    assert y[1] == 1 and y[4] == -1 and y[6] == 0
    assert np.isnan(y[[0, 2, 3, 5, 7]]).all()
    assert rec.images["view"].tolist()[:4] == ["AP", "LATERAL", "AP", "LATERAL"]
    assert rec.images["view"].iloc[-1] == "PA"
    assert rec.images["sex"].tolist()[:4] == ["M", "M", None, None]  # patient 2 is "Unknown"
    assert rec.images["age"].iloc[0] == 41.0


def test_renamed_folder_still_resolves(tmp_path):
    root = write_chexpert(tmp_path, folder="my_copy", n_train_patients=2)
    rec = read_dataset("chexpert", root)
    assert all(p.is_file() for p in rec.absolute_paths())


def test_views_filter_records_dropped(tmp_path):
    rec = read_dataset("chexpert", write_chexpert(tmp_path, n_train_patients=6), views=["pa"])
    assert set(rec.images["view"]) == {"PA"}
    assert rec.notes["dropped_by_view"] == 14 - len(rec)
    assert len(rec.labels) == len(rec)


def test_missing_file(tmp_path):
    root = write_chexpert(tmp_path, n_train_patients=2, images=False)
    (root / "valid.csv").unlink()
    with pytest.raises(DatasetFormatError, match="valid.csv"):
        read_dataset("chexpert", root)


def test_missing_column_and_bad_value(tmp_path):
    root = write_chexpert(tmp_path, n_train_patients=2, images=False)
    header = CHEXPERT_HEADER.replace(",Edema", ",Oedema")
    meta = "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,50,Frontal,PA"
    write_text(root / "valid.csv", [header, meta + ",0" * 14])
    with pytest.raises(DatasetFormatError, match=r"valid\.csv.*Edema"):
        read_dataset("chexpert", root)
    row = "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,50,Frontal,PA" + ",0" * 13 + ",2"
    write_text(root / "valid.csv", [CHEXPERT_HEADER, row.replace(",2", ",0"), row])
    with pytest.raises(DatasetFormatError, match=r"valid\.csv row 3 column 'Support Devices'"):
        read_dataset("chexpert", root)


@pytest.mark.skipif(not (XRV_DATA / "chexpert_train.csv.gz").is_file(), reason="torchxrayvision label files absent")
def test_real_train_csv():
    frame, labels = parse_label_csv(XRV_DATA / "chexpert_train.csv.gz")
    assert len(frame) == 223_414 and labels.shape == (223_414, 14)
    assert frame["Path"].str.extract(r"(patient\d+)")[0].nunique() == 64_540
    assert set(np.unique(labels[~np.isnan(labels)])) == {-1.0, 0.0, 1.0}
