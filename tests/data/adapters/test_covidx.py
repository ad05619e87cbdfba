from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import check_images_exist, read_dataset
from arkx.data.adapters.covidx import parse_line
from arkx.data.records import DatasetFormatError

from .conftest import touch, write_text

CXR4 = {
    "train": ["419639-003251 MIDRC-RICORD-1C-419639-003251-46647-0.png positive ricord",
              "3 a3f1.jpg negative rsna", "3 b7c2.jpg negative rsna", "3 c0de.png positive cohen",
              "12 d1e2.png negative sirm"],
    "val": ["7 e5f6.png positive bimcv"],
    "test": ["8 f7a8.png negative rsna", "9 g9b0.png positive rsna"],
}


def write_covidx(root, lists, images=True):
    for split, lines in lists.items():
        write_text(root / f"{split}.txt", lines)
        if images:
            for line in lines:
                touch(root / split / " ".join(line.split()[1:-2]))
    return root


def test_cxr4_binary_task_official_splits(tmp_path):
    rec = read_dataset("covidx", write_covidx(tmp_path, CXR4))
    assert rec.task.kind == "multilabel" and rec.label_names == ("COVID-19",)
    assert rec.labels[:, 0].tolist() == [1, 0, 0, 1, 0, 1, 0, 1]
    assert rec.images["split"].tolist() == ["train"] * 5 + ["val"] + ["test"] * 2
    assert rec.images["path"][1] == "train/a3f1.jpg" and rec.images["path"][5] == "val/e5f6.png"
    # patient ids are qualified by their source: "3" of rsna and "3" of cohen are different patients
    assert rec.images["patient_id"].tolist()[1:4] == ["rsna:3", "rsna:3", "cohen:3"]
    assert rec.split_source == "official" and "val" not in rec.notes
    check_images_exist(rec)


def test_cxr3_without_val_carves_by_patient(tmp_path):
    lines = [f"{p} img{p}_{k}.png {'positive' if p % 3 == 0 else 'negative'} src{p % 2}"
             for p in range(120) for k in range(2)]
    write_covidx(tmp_path, {"train": lines, "test": ["900 t1.png positive rsna"]}, images=False)
    rec = read_dataset("covidx", tmp_path, val_fraction=0.2)
    split = rec.images["split"]
    assert set(split) == {"train", "val", "test"} and split.iloc[-1] == "test"
    assert 20 <= (split == "val").sum() <= 80
    per_patient = rec.images.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()  # patient-disjoint
    assert "carved" in rec.notes["val"]


def test_legacy_three_classes_multiclass(tmp_path):
    lists = {"train": ["1 a.png normal rsna", "2 b.png pneumonia rsna", "3 c.png COVID-19 cohen"],
             "test": ["4 d.png COVID-19 cohen", "5 e.png normal rsna"]}
    rec = read_dataset("covidx", write_covidx(tmp_path, lists, images=False))
    assert rec.task.kind == "multiclass" and rec.label_names == ("normal", "pneumonia", "COVID-19")
    np.testing.assert_array_equal(rec.labels, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]])


def test_legacy_two_classes_is_single_label(tmp_path):
    lists = {"train": ["1 a.png normal", "2 b.png COVID-19"], "test": ["4 d.png COVID-19 cohen"]}
    rec = read_dataset("covidx", write_covidx(tmp_path, lists, images=False))
    assert rec.task.kind == "multilabel" and rec.labels[:, 0].tolist() == [0, 1, 1]
    assert rec.images["patient_id"].tolist() == ["1", "2", "cohen:4"]


def test_parse_line_with_spaces_in_file_name(tmp_path):
    assert parse_line("p1 COVID-19 (12).png COVID-19 sirm", tmp_path, 1) == ("p1", "COVID-19 (12).png", "COVID-19",
                                                                            "sirm")
    assert parse_line("p1 x.png negative", tmp_path, 1) == ("p1", "x.png", "negative", None)


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="train.txt"):
        read_dataset("covidx", tmp_path)
    root = write_covidx(tmp_path / "a", {"train": ["1 a.png negative rsna", "2 b.png maybe rsna"],
                                         "test": ["3 c.png positive rsna"]}, images=False)
    with pytest.raises(DatasetFormatError, match=r"train.txt line 2: .*'2 b.png maybe rsna'"):
        read_dataset("covidx", root)
    root = write_covidx(tmp_path / "b", {"train": ["1 a.png negative rsna"], "test": ["3 a.png positive rsna"]},
                        images=False)
    with pytest.raises(DatasetFormatError, match=r"test.txt line 1: image 'a.png' already listed in train.txt line 1"):
        read_dataset("covidx", root)
    root = write_covidx(tmp_path / "c", {"train": ["1 a.png negative rsna", "2 b.png pneumonia rsna"],
                                         "test": ["3 c.png positive rsna"]}, images=False)
    with pytest.raises(DatasetFormatError, match="mix"):
        read_dataset("covidx", root)
