from __future__ import annotations

import json

import numpy as np
import pytest

from arkx.data import masks as M
from arkx.data.adapters import read_dataset
from arkx.data.records import DatasetFormatError

from .conftest import touch

CATS = [{"id": 7, "name": "lesion"}, {"id": 3, "name": "tube"}]


def doc(files, anns, h=20, w=30):
    return {"images": [{"id": 100 + i, "file_name": f, "height": h, "width": w} for i, f in enumerate(files)],
            "annotations": [{"id": k, "image_id": 100 + i, **a} for k, (i, a) in enumerate(anns)],
            "categories": CATS}


def write_coco(root, split_files=True):
    square = np.zeros((20, 30), bool)
    square[2:6, 3:8] = True
    anns_train = [
        (0, {"category_id": 7, "bbox": [3, 2, 5, 4], "segmentation": [[3, 2, 8, 2, 8, 6, 3, 6]], "iscrowd": 0}),
        (0, {"category_id": 3, "bbox": [3, 2, 5, 4], "segmentation": M.rle_encode_coco(square), "iscrowd": 1}),
        (1, {"category_id": 3, "bbox": [3, 2, 5, 4], "segmentation": M.rle_encode_coco(square, True), "iscrowd": 1}),
    ]
    train = doc(["a/x1.png", "a/x2.png", "a/x3.png"], anns_train)
    val = doc(["b/y1.png"], [(0, {"category_id": 7, "bbox": [0, 0, 1, 1]})])
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(train))
    if split_files:
        (root / "annotations" / "instances_val.json").write_text(json.dumps(val))
    for f in ("a/x1.png", "a/x2.png", "a/x3.png", "b/y1.png"):
        touch(root / "images" / f)
    return root, square


def test_discovered_split_jsons(tmp_path):
    root, square = write_coco(tmp_path)
    rec = read_dataset("coco", root)
    assert rec.label_names == ("tube", "lesion")  # category-id order
    assert rec.images["image_id"].tolist() == ["a/x1.png", "a/x2.png", "a/x3.png", "b/y1.png"]
    assert rec.images["split"].tolist() == ["train", "train", "train", "val"]
    assert rec.images["path"][0] == "images/a/x1.png" and rec.split_source == "official"
    np.testing.assert_array_equal(rec.labels, [[1, 1], [1, 0], [0, 0], [0, 1]])
    assert rec.boxes[["x_min", "y_min", "x_max", "y_max"]].values.tolist()[0] == [3, 2, 8, 6]
    assert rec.masks["kind"].tolist() == ["polygon", "rle", "rle"]
    assert rec.masks["encoding"].tolist()[1:] == ["coco", "coco-compressed"]
    for row in rec.masks.to_dict("records"):
        np.testing.assert_array_equal(M.decode_mask(row, root), square)


def test_single_annotations_file_and_val_carving(tmp_path):
    root, _ = write_coco(tmp_path, split_files=False)
    rec = read_dataset("coco", root, annotations="annotations/instances_train.json", split="test")
    assert set(rec.images["split"]) == {"test"}
    carved = read_dataset("coco", root, train_json="annotations/instances_train.json", val_fraction=0.99)
    assert set(carved.images["split"]) == {"val"} and carved.split_source == "seeded-patient"
    with pytest.raises(ValueError, match="annotations"):
        read_dataset("coco", root, annotations="annotations/instances_train.json",
                     train_json="annotations/instances_train.json")


def test_bad_annotation_is_named(tmp_path):
    root, _ = write_coco(tmp_path)
    path = root / "annotations" / "instances_val.json"
    d = json.loads(path.read_text())
    d["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(d))
    with pytest.raises(DatasetFormatError, match=r"instances_val.json annotations\[0\]: category_id 99"):
        read_dataset("coco", root)
    (root / "annotations" / "instances_val.json").unlink()
    (root / "annotations" / "instances_train.json").unlink()
    with pytest.raises(DatasetFormatError, match="no annotations option"):
        read_dataset("coco", root)
