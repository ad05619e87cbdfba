from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import check_images_exist, read_dataset
from arkx.data.records import DatasetFormatError

from .conftest import touch, write_dicom


def test_imagenet_style_seeded_split(tmp_path):
    for cls, n in (("pneumonia", 30), ("normal", 40), ("effusion", 30)):
        for k in range(n):
            touch(tmp_path / cls / f"{cls}_{k}.png")
    touch(tmp_path / "normal" / "notes.txt")
    touch(tmp_path / "normal" / ".hidden.png")
    rec = read_dataset("folder", tmp_path)
    assert rec.task.kind == "multiclass" and rec.label_names == ("effusion", "normal", "pneumonia")
    assert len(rec) == 100 and rec.notes["non_image_files_skipped"] == 2
    by_path = dict(zip(rec.images["path"], rec.labels.tolist()))
    assert by_path["pneumonia/pneumonia_3.png"] == [0, 0, 1] and by_path["effusion/effusion_0.png"] == [1, 0, 0]
    assert rec.split_source == "seeded-patient" and set(rec.images["split"]) == {"train", "val", "test"}
    assert rec.images["patient_id"][0] == "effusion_0"  # the file stem
    check_images_exist(rec)


def test_split_folders_patient_regex_and_class_order(tmp_path):
    files = {"train/Normal": ["P1_1.png", "P1_2.jpg", "P2_1.jpeg"], "train/Effusion": ["P3_1.png"],
             "valid/Normal": ["P4_1.png"], "test/Effusion": ["P5_1.png"], "test/Other": ["P6_1.png"]}
    for folder, names in files.items():
        for name in names:
            touch(tmp_path / folder / name)
    rec = read_dataset("folder", tmp_path, patient_regex=r"^(P\d+)_", classes=["Normal", "Effusion", "Other"])
    assert rec.label_names == ("Normal", "Effusion", "Other")
    split = dict(zip(rec.images["path"], rec.images["split"]))
    assert split["valid/Normal/P4_1.png"] == "val" and split["test/Other/P6_1.png"] == "test"
    assert split["train/Normal/P1_2.jpg"] == "train" and rec.split_source == "official"
    pid = dict(zip(rec.images["path"], rec.images["patient_id"]))
    assert pid["train/Normal/P1_1.png"] == pid["train/Normal/P1_2.jpg"] == "P1"
    lab = dict(zip(rec.images["path"], rec.labels.tolist()))
    assert lab["train/Effusion/P3_1.png"] == [0, 1, 0] and lab["test/Other/P6_1.png"] == [0, 0, 1]
    with pytest.raises(DatasetFormatError, match=r"class folder\(s\) \['Other'\].*not in the option classes"):
        read_dataset("folder", tmp_path, classes=["Normal", "Effusion"])
    with pytest.raises(DatasetFormatError, match=r"patient_regex '\^\(Q\\d\+\)' does not match"):
        read_dataset("folder", tmp_path, patient_regex=r"^(Q\d+)")


def test_train_test_only_carves_val_and_dicom_metadata(tmp_path):
    for p in range(60):
        cls = "Normal" if p % 2 else "Sick"
        touch(tmp_path / "train" / cls / f"p{p}_a.png")
        touch(tmp_path / "train" / cls / f"p{p}_b.png")
    write_dicom(tmp_path / "test" / "Sick" / "p99_t.dcm", sex="F", age="034Y", view="PA")
    rec = read_dataset("folder", tmp_path, patient_regex=r"^p\d+", val_fraction=0.3)
    assert (rec.images.groupby("patient_id")["split"].nunique() == 1).all()
    assert (rec.images["split"] == "val").sum() > 0 and "val" in rec.notes
    row = rec.images[rec.images["path"] == "test/Sick/p99_t.dcm"].iloc[0]
    assert (row["split"], row["sex"], row["view"]) == ("test", "F", "PA") and row["age"] == 34
    assert np.isnan(rec.images.loc[rec.images["path"] == "train/Sick/p0_a.png", "age"].iloc[0])


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="no images"):
        read_dataset("folder", tmp_path)
    touch(tmp_path / "only" / "a.png")
    with pytest.raises(DatasetFormatError, match="at least 2 class folders"):
        read_dataset("folder", tmp_path)
    touch(tmp_path / "train" / "x" / "b.png")
    with pytest.raises(DatasetFormatError, match=r"mixes split folders \['train'\] with other folders \['only'\]"):
        read_dataset("folder", tmp_path)
    with pytest.raises(DatasetFormatError, match="not a valid regex"):
        read_dataset("folder", tmp_path, patient_regex="(")
