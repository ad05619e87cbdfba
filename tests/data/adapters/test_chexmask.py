from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from arkx.data.adapters import read_dataset
from arkx.data.masks import rle_decode_chexmask, rle_encode_chexmask
from arkx.data.records import DatasetFormatError

from .conftest import touch, write_text

HEADER = "Image Index,Dice RCA (Max),Dice RCA (Mean),Landmarks,Left Lung,Right Lung,Heart,Height,Width"

# ------------------------------------------------------------------------------------------ codec


def test_known_string_is_row_major_one_based_absolute():
    mask = np.zeros((3, 4), bool)
    mask[0, 1:3] = True  # flat (row-major) 1, 2 -> 1-based start 2, length 2
    mask[2, 0] = True  # flat 8 -> start 9, length 1
    assert rle_encode_chexmask(mask) == "2 2 9 1"
    np.testing.assert_array_equal(rle_decode_chexmask("2 2 9 1", 3, 4), mask)
    # a run crossing a row end continues on the next row (row-major), not down the column
    m = rle_decode_chexmask("4 2", 3, 4)
    assert m[0, 3] and m[1, 0] and m.sum() == 2


def test_empty_and_errors():
    assert rle_encode_chexmask(np.zeros((2, 2))) == ""
    for empty in ("", None, float("nan"), "  "):
        assert not rle_decode_chexmask(empty, 2, 3).any()
    with pytest.raises(ValueError, match="odd"):
        rle_decode_chexmask("1 2 3", 2, 2)
    with pytest.raises(ValueError, match="past the end"):
        rle_decode_chexmask("3 3", 2, 2)
    with pytest.raises(ValueError, match="1-based"):
        rle_decode_chexmask("0 2", 2, 2)
    with pytest.raises(ValueError, match="non-integer"):
        rle_decode_chexmask("1 a", 2, 2)


@settings(max_examples=150, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_encode_decode_identity(mask):
    text = rle_encode_chexmask(mask)
    np.testing.assert_array_equal(rle_decode_chexmask(text, *mask.shape), mask)
    values = [int(v) for v in text.split()]
    starts, lengths = values[0::2], values[1::2]
    assert all(s >= 1 for s in starts) and all(n >= 1 for n in lengths)
    # canonical: runs ordered and separated by at least one background pixel
    assert all(s1 > s0 + n0 for s0, n0, s1 in zip(starts, lengths, starts[1:]))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10), st.integers(1, 10), st.data())
def test_decode_encode_identity_on_canonical_runs(h, w, data):
    n = h * w
    cuts = sorted(data.draw(st.sets(st.integers(0, n), max_size=8)))
    runs = [(a, b) for a, b in zip(cuts[0::2], cuts[1::2]) if b > a]
    text = " ".join(f"{a + 1} {b - a}" for a, b in runs)
    mask = rle_decode_chexmask(text, h, w)
    assert mask.sum() == sum(b - a for a, b in runs)
    np.testing.assert_array_equal(rle_decode_chexmask(rle_encode_chexmask(mask), h, w), mask)


# ------------------------------------------------------------------------------------------ adapter


def row(name, dice_mean, h=4, w=5, heart=""):
    return f"{name},{min(1, dice_mean + 0.02):.3f},{dice_mean:.3f},\"1,2,3,4\",1 3,6 2,{heart},{h},{w}"


def write_chexmask(tmp, rows, name="ChestX-Ray8.csv", header=HEADER):
    root = tmp / "chexmask"
    write_text(root / "OriginalResolution" / name, [header, *rows])
    return root


def test_rows_masks_filter_and_patients(tmp_path):
    root = write_chexmask(tmp_path, [row("00000001_000.png", 0.9, heart="11 4"), row("00000001_001.png", 0.8),
                                     row("00000002_000.png", 0.5), row("00000003_000.png", 0.71)])
    touch(root / "images_001" / "images" / "00000001_000.png")
    rec = read_dataset("chexmask", root)
    assert rec.images["image_id"].tolist() == ["00000001_000.png", "00000001_001.png", "00000003_000.png"]
    assert rec.notes["dropped_low_dice_rca"] == 1 and rec.notes["rows_in_csv"] == 4
    assert rec.images["patient_id"].tolist() == ["00000001", "00000001", "00000003"]
    assert rec.images["path"][0] == "images_001/images/00000001_000.png"
    assert rec.notes["images_unresolved"] == 2
    m = rec.masks
    assert len(m) == 3 * 2 + 1 and rec.notes["empty_masks"] == 2  # empty Heart cells give no row
    r = m[(m.image_id == "00000001_000.png") & (m.label == "Heart")].iloc[0]
    assert (r["kind"], r["encoding"], r["height"], r["width"], r["rle"]) == ("rle", "chexmask", 4, 5, "11 4")
    assert rle_decode_chexmask(r["rle"], r["height"], r["width"])[2, :4].all()
    assert len(read_dataset("chexmask", root, min_dice_rca=0.0)) == 4
    assert len(read_dataset("chexmask", root, min_dice_rca=0.85)) == 1


def test_id_columns_and_images_root(tmp_path):
    header = HEADER.replace("Image Index", "Path")
    refs = ["CheXpert-v1.0/train/patient00007/study1/view1_frontal.jpg",
            "CheXpert-v1.0/train/patient00007/study2/view1_frontal.jpg"]
    root = write_chexmask(tmp_path, [row(r, 0.9) for r in refs], name="CheXpert.csv", header=header)
    images = tmp_path / "elsewhere" / "CheXpert-v1.0"
    touch(images / "train" / "patient00007" / "study1" / "view1_frontal.jpg")
    touch(images / "train" / "patient00007" / "study2" / "view1_frontal.jpg")
    rec = read_dataset("chexmask", root, csv="CheXpert", images_root=str(images))
    assert rec.images["patient_id"].tolist() == ["patient00007"] * 2
    assert rec.images["path"].tolist() == [str(images / "train/patient00007/study1/view1_frontal.jpg"),
                                           str(images / "train/patient00007/study2/view1_frontal.jpg")]
    assert rec.absolute_paths()[1].is_file() and rec.notes["images_unresolved"] == 0


def test_vindr_ids_found_by_stem(tmp_path):
    header = HEADER.replace("Image Index", "image_id")
    root = write_chexmask(tmp_path, [row("abc123", 0.9), row("def456", 0.9)], name="VinDr-CXR.csv", header=header)
    touch(root / "vindr" / "train" / "abc123.dicom")
    rec = read_dataset("chexmask", root, images_root="vindr")
    assert rec.images["path"].tolist() == ["vindr/train/abc123.dicom", "def456"]
    assert rec.images["patient_id"].tolist() == ["abc123", "def456"]


def test_csv_choice_and_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="OriginalResolution"):
        read_dataset("chexmask", tmp_path)
    root = write_chexmask(tmp_path, [row("a.png", 0.9)])
    write_text(root / "OriginalResolution" / "Padchest.csv", [HEADER.replace("Image Index", "ImageID"), row("b.png", 0.9)])
    with pytest.raises(DatasetFormatError, match="several CSVs"):
        read_dataset("chexmask", root)
    assert read_dataset("chexmask", root, csv="Padchest.csv").images["image_id"].tolist() == ["b.png"]
    with pytest.raises(DatasetFormatError, match="Nope"):
        read_dataset("chexmask", root, csv="Nope")
    write_text(root / "bad" / "x.csv", ["name,Left Lung", "a,1 2"])
    with pytest.raises(DatasetFormatError, match="id column"):
        read_dataset("chexmask", root, csv="bad/x.csv")
    write_text(root / "bad" / "y.csv", [HEADER, row("a.png", 0.9, h="", w=5)])
    with pytest.raises(DatasetFormatError, match="Height/Width"):
        read_dataset("chexmask", root, csv="bad/y.csv")
    with pytest.raises(DatasetFormatError, match="quality filter"):
        read_dataset("chexmask", root, csv="ChestX-Ray8", min_dice_rca=0.95)
    with pytest.raises(ValueError, match="min_dice_rca"):
        read_dataset("chexmask", root, csv="ChestX-Ray8", min_dice_rca=1.5)


def test_decode_mask_understands_chexmask_rows():
    from arkx.data.masks import decode_mask

    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 1:3] = True
    row = dict(kind="rle", rle=rle_encode_chexmask(mask), encoding="chexmask", height=3, width=4, label="Heart")
    np.testing.assert_array_equal(decode_mask(row), mask)
