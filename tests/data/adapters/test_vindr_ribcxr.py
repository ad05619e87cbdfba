from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from arkx.data.adapters import read_dataset
from arkx.data.masks import decode_mask
from arkx.data.records import DatasetFormatError

RIBS = [f"R{i}" for i in range(1, 11)] + [f"L{i}" for i in range(1, 11)]


def png(path, h=20, w=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w), np.uint8)).save(path)


def square(x0, y0, s=4):
    return [{"x": x0, "y": y0}, {"x": x0 + s, "y": y0}, {"x": x0 + s, "y": y0 + s}, {"x": x0, "y": y0 + s}]


def write_split(root, split, n, missing=(), data="Data"):
    table = {"img": {}} | {r: {} for r in RIBS}
    for j in range(n):
        name = f"VinDr_RibCXR_{split}_{j:03d}.png"
        png(root / data / split / "img" / name)
        table["img"][str(j)] = f"data/{split}/img/{name}"
        for k, r in enumerate(RIBS):
            table[r][str(j)] = None if (j, r) in missing else square(k, j)
    path = root / data / split / f"Vindr_RibCXR_{split}_mask.json"
    path.write_text(json.dumps(table))
    return path


def test_polygons_and_official_split(tmp_path):
    write_split(tmp_path, "train", 60, missing={(0, "L10")})
    write_split(tmp_path, "val", 3)
    rec = read_dataset("vindr_ribcxr", tmp_path)
    assert rec.task is None and rec.labels.shape == (63, 0)
    assert rec.images["image_id"][0] == "VinDr_RibCXR_train_000"
    assert rec.images["path"][0] == "Data/train/img/VinDr_RibCXR_train_000.png"
    m = rec.masks
    assert len(m) == 63 * 20 - 1 and rec.notes["ribs_missing_or_empty"] == 1
    row = m[(m.image_id == "VinDr_RibCXR_train_001") & (m.label == "R3")].iloc[0]
    assert row["kind"] == "polygon" and list(row["polygon"]) == [2, 1, 6, 1, 6, 5, 2, 5]
    assert (row["height"], row["width"]) == (20, 30)
    mask = decode_mask(row)
    assert mask.sum() == 16 and mask[1:5, 2:6].all()
    split = rec.images.set_index("image_id")["split"]
    assert (split[split.index.str.contains("_val_")] == "test").all()  # no test folder: val -> test
    train = split[split.index.str.contains("_train_")]
    assert set(train) == {"train", "val"}
    assert "val -> test" in rec.notes["split"]


def test_with_test_folder_splits_are_official(tmp_path):
    for s, n in (("train", 4), ("val", 2), ("test", 2)):
        write_split(tmp_path, s, n, data="data")
    rec = read_dataset("vindr_ribcxr", tmp_path)
    assert rec.images["split"].tolist() == ["train"] * 4 + ["val"] * 2 + ["test"] * 2


def test_per_image_json_and_pair_points(tmp_path):
    png(tmp_path / "Data" / "train" / "img" / "a.png")
    png(tmp_path / "Data" / "train" / "img" / "b.png")
    ann = tmp_path / "Data" / "train" / "Annotations"
    ann.mkdir(parents=True)
    (ann / "a.json").write_text(json.dumps({"R1": [[0, 0], [4, 0], [4, 4]], "L1": []}))
    rec = read_dataset("vindr_ribcxr", tmp_path)
    assert rec.images["image_id"].tolist() == ["a"] and rec.notes["images_without_annotation"] == 1
    assert rec.masks["label"].tolist() == ["R1"] and list(rec.masks["polygon"][0]) == [0, 0, 4, 0, 4, 4]


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="train"):
        read_dataset("vindr_ribcxr", tmp_path)
    path = write_split(tmp_path, "train", 1)
    table = json.loads(path.read_text())
    table["img"]["0"] = "data/train/img/missing.png"
    path.write_text(json.dumps(table))
    with pytest.raises(DatasetFormatError, match="missing.png"):
        read_dataset("vindr_ribcxr", tmp_path)
    table["img"]["0"] = "data/train/img/VinDr_RibCXR_train_000.png"
    table["R1"]["0"] = [{"u": 1}]
    path.write_text(json.dumps(table))
    with pytest.raises(DatasetFormatError, match="R1"):
        read_dataset("vindr_ribcxr", tmp_path)
    path.write_text("{not json")
    with pytest.raises(DatasetFormatError, match="cannot parse"):
        read_dataset("vindr_ribcxr", tmp_path)
