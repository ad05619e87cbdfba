from __future__ import annotations

import json

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.adapters.tbx11k import CLASSES
from arkx.data.records import DatasetFormatError

from .conftest import touch

CATS = [{"id": 1, "name": "ActiveTuberculosis", "supercategory": "Tuberculosis"},
        {"id": 2, "name": "ObsoletePulmonaryTuberculosis", "supercategory": "Tuberculosis"},
        {"id": 3, "name": "PulmonaryTuberculosis", "supercategory": "Tuberculosis"}]


def coco(files, anns):
    images = [{"id": i, "file_name": f, "height": 512, "width": 512} for i, f in enumerate(files)]
    annotations = [{"id": k, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                   for k, (i, c, b) in enumerate(anns)]
    return {"images": images, "annotations": annotations, "categories": CATS}


def write_tbx(root, val_health="health/h0009.png"):
    train = ["health/h0001.png", "sick/s0001.png", "tb/tb0001.png", "tb/tb0002.png"] + \
        [f"health/h{k:04d}.png" for k in range(2, 9)]
    val = [val_health, "tb/tb0003.png"]
    j = root / "annotations" / "json"
    j.mkdir(parents=True)
    (j / "TBX11K_train.json").write_text(json.dumps(coco(train, [(2, 1, [10.5, 20, 30, 40]), (2, 2, [100, 100, 5, 6]),
                                                                   (3, 2, [1, 2, 3, 4])])))
    (j / "TBX11K_val.json").write_text(json.dumps(coco(val, [(1, 1, [7, 8, 9, 10])])))
    (j / "all_test.json").write_text(json.dumps({"images": [{"id": 0, "file_name": "test/t0001.png"}],
                                                 "annotations": [], "categories": CATS}))
    for f in train + val + ["test/t0001.png"]:
        touch(root / "imgs" / f)
    return root


def test_classes_boxes_and_default_split(tmp_path):
    rec = read_dataset("tbx11k", write_tbx(tmp_path), val_fraction=0.0)
    assert rec.task.kind == "multiclass" and rec.label_names == CLASSES
    by_id = dict(zip(rec.images["image_id"], range(len(rec))))
    assert rec.labels[by_id["health/h0001.png"]].tolist() == [1, 0, 0]
    assert rec.labels[by_id["sick/s0001.png"]].tolist() == [0, 1, 0]
    assert rec.labels[by_id["tb/tb0001.png"]].tolist() == [0, 0, 1]
    assert rec.images["path"][by_id["tb/tb0001.png"]] == "imgs/tb/tb0001.png"
    split = dict(zip(rec.images["image_id"], rec.images["split"]))
    assert split["tb/tb0003.png"] == "test" and split["tb/tb0001.png"] == "train"  # official val is the test split
    b = rec.boxes[rec.boxes["image_id"] == "tb/tb0001.png"]
    assert b["label"].tolist() == ["ActiveTuberculosis", "ObsoletePulmonaryTuberculosis"]
    assert b[["x_min", "y_min", "x_max", "y_max"]].values.tolist()[0] == [10.5, 20.0, 40.5, 60.0]
    assert "test/t0001.png" not in by_id


def test_val_carving_and_official_mode(tmp_path):
    root = write_tbx(tmp_path)
    rec = read_dataset("tbx11k", root, val_fraction=0.5, split_seed=1)
    counts = rec.images["split"].value_counts()
    assert counts["val"] >= 1 and counts["train"] >= 1 and counts["test"] == 2
    off = read_dataset("tbx11k", root, split="official")
    split = dict(zip(off.images["image_id"], off.images["split"]))
    assert split["tb/tb0003.png"] == "val" and split["test/t0001.png"] == "test"
    assert np.isnan(off.labels[off.images["image_id"].tolist().index("test/t0001.png")]).all()


def test_healthy_image_with_tb_box_is_an_error(tmp_path):
    root = write_tbx(tmp_path, val_health="health/h0009.png")
    j = root / "annotations" / "json" / "TBX11K_val.json"
    doc = json.loads(j.read_text())
    doc["annotations"].append({"id": 9, "image_id": 0, "category_id": 1, "bbox": [1, 1, 2, 2]})
    j.write_text(json.dumps(doc))
    with pytest.raises(DatasetFormatError, match="health/h0009.png is in imgs/health/"):
        read_dataset("tbx11k", root)
    (root / "annotations" / "json" / "TBX11K_train.json").unlink()
    with pytest.raises(DatasetFormatError, match="TBX11K_train.json"):
        read_dataset("tbx11k", root)
