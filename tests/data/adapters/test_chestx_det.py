from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from arkx.data.adapters import read_dataset
from arkx.data.adapters.chestx_det import CATEGORIES
from arkx.data.masks import decode_mask
from arkx.data.records import DatasetFormatError

TRAIN = [
    {"file_name": "36199.png", "syms": ["Nodule", "Effusion"], "boxes": [[10, 12, 20, 24], [30, 30, 50, 60]],
     "polygons": [[[10, 12], [20, 12], [20, 24], [10, 24]], [[30, 30], [50, 30], [50, 60]]]},
    {"file_name": "36200.png", "syms": [], "boxes": [], "polygons": []},
    {"file_name": "36201.png", "syms": ["Fracture"], "boxes": [[1, 2, 3, 4]], "polygons": [[[1, 2], [3, 4]]]},
]
TEST = [{"file_name": "40000.png", "syms": ["Pneumothorax"], "boxes": [[5, 5, 9, 9]],
         "polygons": [[[5, 5], [9, 5], [9, 9], [5, 9]]]}]


def write_det(root, train=TRAIN, test=TEST, folder="train"):
    (root / "ChestX_Det_train.json").write_text(json.dumps(train))
    (root / "ChestX_Det_test.json").write_text(json.dumps(test))
    for part, entries in ((folder, train), ("test", test)):
        (root / part).mkdir(parents=True, exist_ok=True)
        for e in entries:
            Image.fromarray(np.zeros((64, 80), np.uint8)).save(root / part / e["file_name"])
    return root


def test_labels_boxes_polygons(tmp_path):
    rec = read_dataset("chestx_det", write_det(tmp_path), val_fraction=0.0)
    assert rec.label_names == CATEGORIES and len(CATEGORIES) == 13
    assert rec.images["image_id"].tolist() == ["36199.png", "36200.png", "36201.png", "40000.png"]
    assert rec.images["split"].tolist() == ["train", "train", "train", "test"]
    assert rec.images["path"][3] == "test/40000.png"
    row0 = dict(zip(CATEGORIES, rec.labels[0]))
    assert row0["Nodule"] == 1 and row0["Effusion"] == 1 and sum(row0.values()) == 2
    assert rec.labels[1].sum() == 0
    assert rec.boxes[["x_min", "y_min", "x_max", "y_max"]].values.tolist()[0] == [10, 12, 20, 24]
    masks = rec.masks
    assert masks["label"].tolist() == ["Nodule", "Effusion", "Pneumothorax"]  # 2-point polygon skipped
    assert rec.notes["polygons_with_fewer_than_3_points"] == 1
    assert masks[["height", "width"]].values.tolist()[0] == [64, 80]  # from the PNG header
    nodule = decode_mask(masks.iloc[0], rec.root)
    assert nodule.shape == (64, 80) and nodule.sum() == 10 * 12 and nodule[12:24, 10:20].all()


def test_train_data_folder_and_errors(tmp_path):
    rec = read_dataset("chestx_det", write_det(tmp_path, folder="train_data"))
    assert rec.images["path"][0] == "train_data/36199.png"
    bad = [dict(TRAIN[0], syms=["Nodule"])]
    (tmp_path / "ChestX_Det_train.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetFormatError, match="1 syms but 2 boxes"):
        read_dataset("chestx_det", tmp_path)
    (tmp_path / "ChestX_Det_train.json").write_text(json.dumps([dict(TRAIN[2], syms=["Broken rib"])]))
    with pytest.raises(DatasetFormatError, match="unknown categories"):
        read_dataset("chestx_det", tmp_path)
