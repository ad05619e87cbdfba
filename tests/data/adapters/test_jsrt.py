from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from arkx.data.adapters import read_dataset
from arkx.data.adapters.jsrt import parse_clinical_line
from arkx.data.masks import decode_mask
from arkx.data.records import DatasetFormatError

from .conftest import write_text

STRUCTS = ("left lung", "right lung", "heart", "left clavicle", "right clavicle")
SIDE = 8  # raw images of 8x8 words (real ones are 2048x2048)


def write_img(path, side=SIDE):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.full((side, side), 1000, dtype=">u2").tofile(path)


def write_gif(path, side=SIDE // 2, fill=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((side, side), np.uint8)
    if fill:
        arr[1:3, 1:3] = 255
    Image.fromarray(arr, mode="L").save(path, format="GIF")


def write_jsrt(tmp, stems=("JPCLN001", "JPCLN002", "JPCNN001", "JPCNN002"), clinical=True, parent="scratch"):
    root = tmp / "jsrt"
    for s in stems:
        write_img(root / "All247images" / f"{s}.IMG")
        fold = 1 if int(s[-3:]) % 2 else 2
        base = root / parent / f"fold{fold}" / "masks" if parent else root / f"fold{fold}" / "masks"
        for st in STRUCTS:
            write_gif(base / st / f"{s}.gif")
    if clinical:
        write_text(root / "Clinical_Information" / "CLNDAT_EN.txt", [
            "JPCLN001.IMG\t5\t15\t53\tmale\t1024\t512\tmalignant\tl.upper lobe\tlung cancer",
            "JPCLN002.IMG\t3\t30\t?\tfemale\t2040\t100\tbenign\tr.lower lobe\thamartoma",
        ])
        write_text(root / "Clinical_Information" / "CNNDAT_EN.txt", ["JPCNN001.IMG\t58\tfemale\tnon-nodule"])
    return root


def test_labels_masks_clinical_and_boxes(tmp_path):
    root = write_jsrt(tmp_path)
    rec = read_dataset("jsrt", root)
    assert rec.images["image_id"].tolist() == ["JPCLN001", "JPCLN002", "JPCNN001", "JPCNN002"]
    assert rec.label_names == ("Nodule",) and rec.labels[:, 0].tolist() == [1, 1, 0, 0]
    assert rec.images["path"][0] == "All247images/JPCLN001.IMG"
    assert rec.images["sex"].tolist() == ["M", "F", "F", None]
    ages = rec.images["age"].tolist()
    assert ages[0] == 53 and math.isnan(ages[1]) and ages[2] == 58 and math.isnan(ages[3])
    assert rec.notes["clinical_missing"] == 1
    m = rec.masks
    assert len(m) == 4 * 5 and set(m["label"]) == {"Left Lung", "Right Lung", "Heart", "Left Clavicle", "Right Clavicle"}
    row = m[(m.image_id == "JPCLN002") & (m.label == "Left Lung")].iloc[0]
    assert row["path"] == "scratch/fold2/masks/left lung/JPCLN002.gif" and row["kind"] == "file"
    mask = decode_mask(row, root)
    assert mask.shape == (SIDE // 2, SIDE // 2) and mask.sum() == 4
    # nodule boxes: centre (1024, 512) of 2048 scaled to the 8-pixel file; side 15 mm / 0.175 mm
    b = rec.boxes.set_index("image_id")
    half = 15 / 0.175 / 2 * SIDE / 2048
    np.testing.assert_allclose(b.loc["JPCLN001", ["x_min", "y_min", "x_max", "y_max"]].to_numpy(float),
                               [4 - half, 2 - half, 4 + half, 2 + half])
    assert b.loc["JPCLN002", "x_max"] == SIDE  # clipped to the image
    assert set(rec.boxes["label"]) == {"Nodule"} and len(rec.boxes) == 2


def test_fold_split(tmp_path):
    stems = [f"JPCLN{i:03d}" for i in range(1, 41)]
    root = write_jsrt(tmp_path, stems, clinical=False)
    rec = read_dataset("jsrt", root)
    odd = np.array([int(s[-3:]) % 2 == 1 for s in stems])
    split = rec.images["split"].to_numpy()
    assert (split[~odd] == "test").all() and (split[odd] != "test").all()
    assert (split[odd] == "val").any() and (split[odd] == "train").sum() > 10
    rec1 = read_dataset("jsrt", root, test_fold=1)
    assert (rec1.images["split"].to_numpy()[odd] == "test").all()
    assert rec.notes["clinical_files"] == [] and rec.boxes.empty
    with pytest.raises(ValueError, match="test_fold"):
        read_dataset("jsrt", root, test_fold=3)


def test_folds_without_scratch_parent(tmp_path):
    rec = read_dataset("jsrt", write_jsrt(tmp_path, clinical=False, parent=""))
    assert rec.masks["path"].str.startswith("fold").all() and len(rec.masks) == 20


@pytest.mark.parametrize("line,expect", [
    ("JPCLN001.IMG\t5\t15\t53\tmale\t1634\t692\tmalignant\tl.upper lobe\tlung cancer",
     dict(image_id="JPCLN001", sex="M", age=53.0, size_mm=15.0, x=1634.0, y=692.0, malignancy="malignant", subtlety=5.0)),
    ("JPCNN010.IMG\t72\tfemale\tnon-nodule", dict(image_id="JPCNN010", sex="F", age=72.0)),
    ("JPCNN011.IMG  ?  male  non-nodule", dict(image_id="JPCNN011", sex="M")),
])
def test_parse_clinical_line(line, expect):
    out = parse_clinical_line(line)
    for k, v in expect.items():
        assert out[k] == v, k
    if "age" not in expect:
        assert math.isnan(out["age"])


def test_parse_clinical_line_ignores_other_lines():
    assert parse_clinical_line("") is None and parse_clinical_line("filename\tage\tsex") is None


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="All247images"):
        read_dataset("jsrt", tmp_path)
    root = write_jsrt(tmp_path, clinical=False)
    write_img(root / "All247images" / "JPCXX001.IMG")
    with pytest.raises(DatasetFormatError, match="JPCXX001"):
        read_dataset("jsrt", root)
    (root / "All247images" / "JPCXX001.IMG").unlink()
    write_gif(root / "scratch" / "fold1" / "masks" / "lungs" / "JPCLN001.gif")
    with pytest.raises(DatasetFormatError, match="unknown SCR structure"):
        read_dataset("jsrt", root)
    import shutil

    shutil.rmtree(root / "scratch" / "fold1" / "masks" / "lungs")
    write_gif(root / "scratch" / "fold1" / "masks" / "heart" / "JPCLN002.gif")
    with pytest.raises(DatasetFormatError, match="both fold1 and fold2"):
        read_dataset("jsrt", root)
    shutil.rmtree(root / "scratch")
    with pytest.raises(DatasetFormatError, match="SCR masks"):
        read_dataset("jsrt", root)
