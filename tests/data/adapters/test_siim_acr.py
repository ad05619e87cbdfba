from __future__ import annotations

import numpy as np
import pytest

from arkx.data import masks as M
from arkx.data.adapters import read_dataset
from arkx.data.records import DatasetFormatError

from .conftest import write_dicom, write_text

H = W = 4  # write_dicom writes 4x4 images
ID_A, ID_B, ID_C, ID_D = "1.2.276.0.1.1", "1.2.276.0.1.2", "1.2.276.0.1.3", "1.2.276.0.1.4"


def write_siim(root, rows, ids=(ID_A, ID_B, ID_C), name="train-rle.csv", header="ImageId, EncodedPixels"):
    write_text(root / name, [header, *(f"{i},{r}" for i, r in rows)])
    for k, i in enumerate(ids):
        write_dicom(root / "dicom-images-train" / f"study{k}" / f"series{k}" / f"{i}.dcm",
                    sex="F" if k % 2 else "M", age=f"{30 + k:03d}Y", view="PA" if k % 2 else "AP")
    return root


def test_masks_labels_boxes_and_metadata(tmp_path):
    # A: two rows (two pneumothorax parts) -> merged; B: none; C: one row
    # column-major 4x4: "0 2" = (y 0..1, x 0); relative "10 2" after it = flat 12..13 = (y 0..1, x 3)
    rows = [(ID_A, "0 2"), (ID_A, "12 2"), (ID_B, "-1"), (ID_C, "5 2 5 2")]
    rec = read_dataset("siim_acr", write_siim(tmp_path, rows))
    assert rec.images["image_id"].tolist() == [ID_A, ID_B, ID_C]
    assert rec.images["path"][0] == f"dicom-images-train/study0/series0/{ID_A}.dcm"
    assert rec.label_names == ("Pneumothorax",) and rec.labels[:, 0].tolist() == [1, 0, 1]
    assert rec.images["sex"].tolist() == ["M", "F", "M"] and rec.images["view"].tolist() == ["AP", "PA", "AP"]
    assert rec.images["age"].tolist() == [30.0, 31.0, 32.0]
    masks = rec.masks.set_index("image_id")
    assert set(masks.index) == {ID_A, ID_C} and set(masks["encoding"]) == {"kaggle-siim"}
    a = M.decode_mask(masks.loc[ID_A], rec.root)
    expect = np.zeros((H, W), bool)
    expect[0:2, 0] = expect[0:2, 3] = True
    np.testing.assert_array_equal(a, expect)
    assert masks.loc[ID_C, "rle"] == "5 2 5 2"  # a single row is kept as written
    boxes = rec.boxes.sort_values(["image_id", "x_min"]).reset_index(drop=True)
    got = [(r.image_id, r.x_min, r.y_min, r.x_max, r.y_max) for r in boxes.itertuples()]
    assert got == [(ID_A, 0, 0, 1, 2), (ID_A, 3, 0, 4, 2), (ID_C, 1, 1, 2, 3), (ID_C, 3, 0, 4, 2)]
    assert rec.notes["images_with_several_rle_rows"] == 1 and rec.split_source == "seeded-patient"
    assert read_dataset("siim_acr", tmp_path, boxes_from_masks=False).boxes is None


def test_absolute_stage2_file_is_told_apart(tmp_path):
    mask = np.zeros((H, W), bool)
    mask[1:3, 1] = mask[0:2, 3] = True
    rows = [(ID_A, M.rle_encode_kaggle(mask, relative=False)), (ID_B, "-1"), (ID_C, "-1")]
    root = write_siim(tmp_path, rows, name="stage_2_train.csv", header="ImageId,EncodedPixels")
    rec = read_dataset("siim_acr", root)
    assert rec.masks["encoding"].tolist() == ["kaggle"]
    np.testing.assert_array_equal(M.decode_mask(rec.masks.iloc[0], root), mask)
    with pytest.raises(DatasetFormatError, match="past the last pixel"):
        read_dataset("siim_acr", root, rle="relative")


def test_missing_dicom_and_bad_rle(tmp_path):
    rows = [(ID_A, "0 2"), (ID_B, "-1"), (ID_D, "-1")]
    root = write_siim(tmp_path, rows)
    with pytest.raises(DatasetFormatError, match=r"1 of 3 images .* 1\.2\.276\.0\.1\.4"):
        read_dataset("siim_acr", root)
    rec = read_dataset("siim_acr", root, drop_missing_images=True)
    assert len(rec) == 2 and rec.notes["dropped_missing_images"] == 1
    write_text(root / "train-rle.csv", ["ImageId, EncodedPixels", f"{ID_A},0 2 1", f"{ID_B},-1"])
    with pytest.raises(DatasetFormatError, match="neither"):
        read_dataset("siim_acr", root)
    write_text(root / "train-rle.csv", ["ImageId, EncodedPixels", f"{ID_A},0 2 1", f"{ID_B},-1"])
    with pytest.raises(DatasetFormatError, match=r"row 2 \(1\.2\.276\.0\.1\.1\)"):
        read_dataset("siim_acr", root, rle="relative")


def test_mask_size_without_headers(tmp_path):
    root = write_siim(tmp_path, [(ID_A, "1000 3"), (ID_B, "-1"), (ID_C, "-1")])
    rec = read_dataset("siim_acr", root, read_dicom_metadata=False, mask_size=64)
    assert rec.masks[["height", "width"]].values.tolist() == [[64, 64]]
    assert rec.boxes[["x_min", "y_min", "x_max", "y_max"]].values.tolist() == [[15.0, 40.0, 16.0, 43.0]]
    assert rec.images["patient_id"].tolist() == [ID_A, ID_B, ID_C]
