from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from arkx.data import masks as M
from arkx.data.mha import MetaImageError, read_mha, read_mha_header, write_mha

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def bool_masks(draw, max_side: int = 24):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    return draw(arrays(bool, (h, w)))


# ------------------------------------------------------------------------------------ Kaggle / SIIM RLE


def test_siim_relative_rle_known_values():
    # 4x4, pixels (y=1, x=1), (y=2, x=1): column-major flat indices 5 and 6
    m = np.zeros((4, 4), bool)
    m[1:3, 1] = True
    assert M.rle_encode_kaggle(m) == "5 2"
    assert M.rle_encode_kaggle(m, relative=False) == "6 2"  # standard Kaggle: absolute, 1-based
    np.testing.assert_array_equal(M.rle_decode_kaggle("5 2", 4, 4), m)
    # a second run: flat 12..13 (x=3, y=0..1) -> 4 background pixels after the first run ends at 7
    m[0:2, 3] = True
    assert M.rle_encode_kaggle(m) == "5 2 5 2"
    assert M.rle_encode_kaggle(m, relative=False) == "6 2 13 2"
    # transposed storage: a non-square mask decodes with height as the fast axis
    r = np.zeros((2, 3), bool)
    r[1, 0] = r[0, 1] = True  # flat 1 and 2 (column-major)
    assert M.rle_encode_kaggle(r) == "1 2"
    np.testing.assert_array_equal(M.rle_decode_kaggle("1 2", 2, 3), r)


def test_kaggle_empty_and_errors():
    assert not M.rle_decode_kaggle("-1", 3, 5).any()
    assert not M.rle_decode_kaggle(" -1 ", 3, 5).any()
    assert M.rle_decode_kaggle("", 3, 5).shape == (3, 5)
    assert M.rle_encode_kaggle(np.zeros((3, 5), bool)) == "-1"
    for bad in ("1 2 3", "0 0", "a b", "10 20"):  # odd count, zero length, text, past the end
        with pytest.raises(M.MaskDecodeError):
            M.rle_decode_kaggle(bad, 4, 4)
    with pytest.raises(M.MaskDecodeError, match="overlapping or unordered"):
        M.rle_decode_kaggle("5 3 6 1", 4, 4, relative=False)
    with pytest.raises(M.MaskDecodeError, match="1-based"):
        M.rle_decode_kaggle("0 2", 4, 4, relative=False)


@SETTINGS
@given(bool_masks(), st.booleans())
def test_kaggle_roundtrip(mask, relative):
    text = M.rle_encode_kaggle(mask, relative=relative)
    np.testing.assert_array_equal(M.rle_decode_kaggle(text, *mask.shape, relative=relative), mask)
    if mask.any():
        values = [int(v) for v in text.split()]
        assert sum(values[1::2]) == int(mask.sum())
        if relative:  # canonical: runs are maximal, so every later gap is >= 1
            assert all(v >= 1 for v in values[2::2])


def test_guess_relative_or_absolute():
    m = np.zeros((16, 16), bool)
    m[2:5, 3:6] = True
    m[10:12, 12] = True
    rel, ab = M.rle_encode_kaggle(m), M.rle_encode_kaggle(m, relative=False)
    assert M.guess_kaggle_relative([rel, "-1"], 16, 16) is True
    assert M.guess_kaggle_relative([ab, "-1"], 16, 16) is False
    with pytest.raises(M.MaskDecodeError, match="neither"):
        M.guess_kaggle_relative(["250 10 1 1"], 16, 16)


# ------------------------------------------------------------------------------------ COCO RLE


def test_coco_known_values():
    m = np.zeros((4, 4), bool)
    m[1:3, 1] = True
    assert M.rle_encode_coco(m) == {"size": [4, 4], "counts": [5, 2, 9]}
    assert M.rle_encode_coco(np.ones((2, 2), bool))["counts"] == [0, 4]
    assert M.rle_encode_coco(np.zeros((2, 3), bool))["counts"] == [6]
    # compressed strings checked against pycocotools 2.0.11 (encode of the same masks)
    assert M.rle_encode_coco(m, compressed=True)["counts"] == "529"
    big = np.zeros((100, 100), bool)
    big[10:60, 20:70] = True
    assert M.coco_string_to_counts(M.rle_encode_coco(big, compressed=True)["counts"]) == M.rle_encode_coco(big)["counts"]
    np.testing.assert_array_equal(M.rle_decode_coco({"size": [4, 4], "counts": "529"}), m)
    with pytest.raises(M.MaskDecodeError, match="sum to"):
        M.rle_decode_coco({"size": [4, 4], "counts": [5, 2]})


@SETTINGS
@given(bool_masks(40), st.booleans())
def test_coco_roundtrip(mask, compressed):
    rle = M.rle_encode_coco(mask, compressed=compressed)
    assert rle["size"] == list(mask.shape)
    np.testing.assert_array_equal(M.rle_decode_coco(rle), mask)
    if not compressed:
        assert sum(rle["counts"]) == mask.size and sum(rle["counts"][1::2]) == int(mask.sum())


@SETTINGS
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=30))
def test_coco_string_codec_roundtrip(counts):
    assert M.coco_string_to_counts(M.coco_counts_to_string(counts)) == counts


@pytest.mark.skipif(importlib.util.find_spec("pycocotools") is None, reason="pycocotools not installed")
@SETTINGS
@given(bool_masks(30))
def test_coco_matches_pycocotools(mask):
    from pycocotools import mask as cm

    ref = cm.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert M.rle_encode_coco(mask, compressed=True)["counts"] == ref["counts"].decode()
    np.testing.assert_array_equal(M.rle_decode_coco(ref), mask)


# ------------------------------------------------------------------------------------ polygons and boxes


@SETTINGS
@given(st.integers(1, 30), st.integers(1, 30), st.data())
def test_rectangle_polygon_fills_exactly_the_rectangle(h, w, data):
    x0 = data.draw(st.integers(0, w - 1))
    x1 = data.draw(st.integers(x0 + 1, w))
    y0 = data.draw(st.integers(0, h - 1))
    y1 = data.draw(st.integers(y0 + 1, h))
    expect = np.zeros((h, w), bool)
    expect[y0:y1, x0:x1] = True
    for poly in ([x0, y0, x1, y0, x1, y1, x0, y1], [[x0, y1], [x1, y1], [x1, y0], [x0, y0]]):  # both orientations
        got = M.polygon_to_mask(poly, h, w)
        np.testing.assert_array_equal(got, expect)
        assert M.mask_to_box(got) == (x0, y0, x1, y1)


def test_polygon_triangle_and_clipping():
    tri = M.polygon_to_mask([0, 0, 4, 0, 0, 4], 4, 4)  # centres strictly below the diagonal x + y < 4
    expect = np.array([[(x + 0.5) + (y + 0.5) < 4 for x in range(4)] for y in range(4)])
    np.testing.assert_array_equal(tri, expect)
    assert M.polygon_to_mask([-5, -5, 50, -5, 50, 50, -5, 50], 3, 2).all()
    assert not M.polygon_to_mask([1, 1, 2, 2], 4, 4).any()  # fewer than 3 vertices
    with pytest.raises(M.MaskDecodeError):
        M.polygon_to_mask([1, 2, 3], 4, 4)


@SETTINGS
@given(bool_masks(20))
def test_mask_to_box_contains_all_pixels_and_is_tight(mask):
    box = M.mask_to_box(mask)
    if not mask.any():
        assert box is None
        return
    x0, y0, x1, y1 = box
    ys, xs = np.nonzero(mask)
    assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
    # tight: every edge row / column of the box holds a mask pixel
    assert mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
    assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
    stacked = M.masks_to_boxes(np.stack([mask, np.zeros_like(mask)]))
    np.testing.assert_array_equal(stacked[0], np.array(box, dtype=float))
    assert np.isnan(stacked[1]).all()


@SETTINGS
@given(bool_masks(18))
def test_polygons_of_mask_rasterise_back(mask):
    from scipy import ndimage

    labels, n = ndimage.label(mask)  # 4-connectivity
    polys = M.mask_to_polygons(mask)
    assert len(polys) == n
    for k, poly in enumerate(polys, start=1):
        np.testing.assert_array_equal(M.polygon_to_mask(poly, *mask.shape), ndimage.binary_fill_holes(labels == k))


@SETTINGS
@given(bool_masks(20))
def test_component_boxes_cover_mask(mask):
    boxes = M.component_boxes(mask)
    cover = np.zeros_like(mask)
    for x0, y0, x1, y1 in boxes:
        cover[y0:y1, x0:x1] = True
        assert mask[y0:y1, x0:x1].any()
    assert not (mask & ~cover).any()
    if mask.any():
        assert M.component_boxes(mask, connectivity=4).__len__() >= len(boxes) >= 1


def test_component_boxes_known():
    m = np.zeros((10, 10), bool)
    m[1:3, 1:3] = True
    m[3, 3] = True  # touches diagonally: same 8-component, separate 4-component
    m[6:9, 5:9] = True
    assert M.component_boxes(m) == [(1, 1, 4, 4), (5, 6, 9, 9)]
    assert M.component_boxes(m, connectivity=4) == [(1, 1, 3, 3), (3, 3, 4, 4), (5, 6, 9, 9)]


# ------------------------------------------------------------------------------------ decode_mask rows


def test_decode_mask_dispatch(tmp_path):
    m = np.zeros((6, 5), bool)
    m[1:4, 2:4] = True
    Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "m.png")
    Image.fromarray((m * 3).astype(np.uint8)).save(tmp_path / "labels.png")
    rows = [
        {"kind": "file", "path": "m.png"},
        {"kind": "file", "path": "labels.png", "value": 3, "height": 6, "width": 5},
        {"kind": "rle", "rle": M.rle_encode_kaggle(m), "encoding": "kaggle-siim", "height": 6, "width": 5},
        {"kind": "rle", "rle": M.rle_encode_kaggle(m, relative=False), "encoding": "kaggle", "height": 6, "width": 5},
        {"kind": "rle", "rle": " ".join(map(str, M.rle_encode_coco(m)["counts"])), "encoding": "coco",
         "height": 6, "width": 5},
        {"kind": "rle", "rle": M.rle_encode_coco(m, True)["counts"], "encoding": "coco-compressed",
         "height": 6, "width": 5},
        {"kind": "polygon", "polygon": [2, 1, 4, 1, 4, 4, 2, 4], "height": 6, "width": 5},
        {"kind": "polygon", "polygon": [[2, 1, 4, 1, 4, 2, 2, 2], [2, 2, 4, 2, 4, 4, 2, 4]], "height": 6, "width": 5},
    ]
    frame = pd.DataFrame(rows)
    for row in frame.to_dict("records"):
        np.testing.assert_array_equal(M.decode_mask(row, tmp_path), m, err_msg=str(row))
    for bad in ({"kind": "file", "path": "absent.png"}, {"kind": "rle", "rle": "1 2", "encoding": "nope",
                                                          "height": 2, "width": 2},
                {"kind": "blob"}, {"kind": "file", "path": "m.png", "height": 5, "width": 5}):
        with pytest.raises(M.MaskDecodeError):
            M.decode_mask(bad, tmp_path)


# ------------------------------------------------------------------------------------ MetaImage


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.float32])
def test_mha_roundtrip(tmp_path, dtype, compress):
    arr = (np.arange(7 * 5).reshape(7, 5) * 37 % 251).astype(dtype)
    path = write_mha(tmp_path / "x.mha", arr, spacing=(0.5, 0.25), compress=compress)
    back = read_mha(path)
    assert back.shape == (7, 5) and back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, arr)
    header = read_mha_header(path)
    assert header["DimSize"] == "5 7" and header["ElementDataFile"] == "LOCAL"


def test_mha_detached_big_endian_and_errors(tmp_path):
    arr = np.array([[1, 2, 3], [400, 500, 65535]], dtype=np.uint16)
    (tmp_path / "x.raw").write_bytes(arr.astype(">u2").tobytes())
    (tmp_path / "x.mhd").write_text("ObjectType = Image\nNDims = 2\nBinaryDataByteOrderMSB = True\n"
                                    "DimSize = 3 2\nElementType = MET_USHORT\nElementDataFile = x.raw\n")
    np.testing.assert_array_equal(read_mha(tmp_path / "x.mhd"), arr)
    (tmp_path / "bad.mha").write_bytes(b"NDims = 2\nDimSize = 3 2\nElementType = MET_USHORT\n"
                                       b"ElementDataFile = LOCAL\n" + b"\0" * 4)
    with pytest.raises(MetaImageError, match="needs 12"):
        read_mha(tmp_path / "bad.mha")


# ------------------------------------------------------------------------------------ the real SIIM file

XRV_FILE = "siim-pneumothorax-train-rle.csv.gz"


def _xrv_siim() -> Path | None:
    spec = importlib.util.find_spec("torchxrayvision")
    places = []
    if spec is not None and spec.submodule_search_locations:
        places += [Path(p) / "data" for p in spec.submodule_search_locations]
    places.append(Path("/tmp/xrv/torchxrayvision/data"))
    return next((p / XRV_FILE for p in places if (p / XRV_FILE).is_file()), None)


def test_real_siim_rle_file():
    path = _xrv_siim()
    if path is None:
        pytest.skip(f"{XRV_FILE} (torchxrayvision wheel) not available")
    frame = pd.read_csv(gzip.open(path), dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["ImageId", " EncodedPixels"]  # the header has a space, as on Kaggle
    rles = frame[" EncodedPixels"].str.strip()
    assert len(frame) == 12_954
    assert frame["ImageId"].nunique() == 12_047
    positive = rles != "-1"
    assert int(positive.sum()) == 3_576  # mask rows
    assert frame.loc[positive, "ImageId"].nunique() == 2_669  # images with pneumothorax
    assert int((~positive).sum()) == 9_378 and frame.loc[~positive, "ImageId"].nunique() == 9_378
    assert M.guess_kaggle_relative(rles[positive], 1024, 1024) is True
    total = 0
    for text in rles[positive]:
        mask = M.rle_decode_kaggle(text, 1024, 1024)
        n = int(mask.sum())
        assert n > 0
        assert n == sum(int(v) for v in text.split()[1::2])
        assert M.rle_encode_kaggle(mask) == text  # canonical: re-encodes to the same string
        total += n
    assert total > 0


def test_every_public_name_is_importable_from_the_package():
    # arkx.data.masks is a package split by concern (rle, polygon, boxes, decode); its names stay here
    assert {"decode_mask", "mask_to_box", "component_boxes", "HAVE_SCIPY", "rle_decode_chexmask",
            "rle_encode_chexmask", "MaskDecodeError", "MASK_COLUMNS"} <= set(M.__all__)
    assert [name for name in M.__all__ if not hasattr(M, name)] == []
