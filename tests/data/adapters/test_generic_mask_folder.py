from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from arkx.data.adapters import read_dataset
from arkx.data.masks import decode_mask
from arkx.data.records import DatasetFormatError

from .conftest import touch


def png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


def test_label_folders(tmp_path):
    for name in ("a", "b", "c"):
        touch(tmp_path / "images" / f"{name}.jpg")
    png(tmp_path / "masks" / "Heart" / "a.png", np.eye(4) * 255)
    png(tmp_path / "masks" / "Left Lung" / "a.png", np.ones((4, 4)))
    png(tmp_path / "masks" / "Left Lung" / "b.png", np.ones((4, 4)))
    rec = read_dataset("mask_folder", tmp_path)
    assert rec.images["image_id"].tolist() == ["a", "b", "c"] and rec.task is None
    assert rec.images["path"][0] == "images/a.jpg" and rec.split_source == "seeded-patient"
    m = rec.masks
    assert sorted(zip(m.image_id, m.label)) == [("a", "Heart"), ("a", "Left Lung"), ("b", "Left Lung")]
    assert m["value"].isna().all() and rec.notes["images_without_mask"] == 1
    heart = decode_mask(m[m.label == "Heart"].iloc[0], tmp_path)
    np.testing.assert_array_equal(heart, np.eye(4, dtype=bool))


def test_index_masks_with_label_values_and_splits(tmp_path):
    idx = np.array([[0, 1, 1], [2, 2, 0], [0, 0, 3]])
    for split in ("train", "val", "test"):
        touch(tmp_path / split / "images" / "x.png")
        png(tmp_path / split / "masks" / "x.png", idx)
    rec = read_dataset("mask_folder", tmp_path, label_values={"Right Lung": 1, "Left Lung": 2})
    assert rec.images["image_id"].tolist() == ["train/x", "val/x", "test/x"]
    assert rec.images["split"].tolist() == ["train", "val", "test"] and rec.split_source == "official"
    m = rec.masks[rec.masks.image_id == "val/x"].set_index("label")
    assert m.loc["Left Lung", "value"] == 2 and m.loc["Left Lung", "path"] == "val/masks/x.png"
    np.testing.assert_array_equal(decode_mask(m.loc["Left Lung"], tmp_path), idx == 2)
    np.testing.assert_array_equal(decode_mask(m.loc["Right Lung"], tmp_path), idx == 1)
    binary = read_dataset("mask_folder", tmp_path, default_label="lungs")
    assert set(binary.masks["label"]) == {"lungs"}
    np.testing.assert_array_equal(decode_mask(binary.masks.iloc[0], tmp_path), idx > 0)


def test_patient_regex_and_seeded_split(tmp_path):
    for p in range(40):
        for k in range(2):
            touch(tmp_path / "images" / f"pat{p:03d}_img{k}.png")
    (tmp_path / "masks").mkdir()
    rec = read_dataset("mask_folder", tmp_path, patient_regex=r"^(pat\d+)_")
    assert rec.images["patient_id"][1] == "pat000"
    assert rec.images.groupby("patient_id")["split"].nunique().max() == 1
    assert set(rec.images["split"]) == {"train", "val", "test"}
    with pytest.raises(DatasetFormatError, match="does not match"):
        read_dataset("mask_folder", tmp_path, patient_regex=r"^(xyz)")


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="images"):
        read_dataset("mask_folder", tmp_path)
    touch(tmp_path / "images" / "a.png")
    with pytest.raises(DatasetFormatError, match="masks"):
        read_dataset("mask_folder", tmp_path)
    png(tmp_path / "masks" / "Heart" / "zz.png", np.ones((2, 2)))
    with pytest.raises(DatasetFormatError, match="no image.*zz"):
        read_dataset("mask_folder", tmp_path)
    (tmp_path / "masks" / "Heart" / "zz.png").rename(tmp_path / "masks" / "Heart" / "a.png")
    with pytest.raises(DatasetFormatError, match="label_values"):
        read_dataset("mask_folder", tmp_path, label_values={"Heart": 1})
    png(tmp_path / "masks" / "a.png", np.ones((2, 2)))
    with pytest.raises(DatasetFormatError, match="mixes"):
        read_dataset("mask_folder", tmp_path)
    with pytest.raises(DatasetFormatError, match="distinct"):
        read_dataset("mask_folder", tmp_path, label_values={"A": 1, "B": 1})
