"""The prepared cache's localisation and segmentation targets (format 3): original sizes, masks at cache
resolution with presence, boxes in cache pixels (from the records, or derived from the masks), the
annotations in the fingerprint, old-format folders, and loaders carrying the targets."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import arkx.data.cache as cache_mod
from arkx.data.cache import CacheNotReady, cache_key, open_cache, prepare
from arkx.data.io import load_resized, read_image
from arkx.data.loaders import PreparedDataset, make_loader
from arkx.data.records import IMAGE_COLUMNS, Records
from arkx.errors import ArkxValueError
from arkx.tasks import Task

S = 16
# (height, width) of each image file: not square, not S, one large JPEG (decoded at a reduced DCT scale)
SHAPES = [(40, 64), (48, 32), (64, 64), (36, 52), (160, 128)]


def write_images(root):
    rng = np.random.default_rng(0)
    rows = []
    for i, (h, w) in enumerate(SHAPES):
        name = f"img{i}.jpg" if i == 4 else f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(root / name)
        rows.append(dict(image_id=f"im{i}", path=name, patient_id=f"p{i}", split=["train", "val", "test"][i % 3],
                         view="PA", sex=None, age=np.nan))
    return pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))


def save_mask(root, name, shape, *rects):
    mask = np.zeros(shape, np.uint8)
    for y0, y1, x0, x1 in rects:
        mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(root / name)
    return name


def make_records(root, with_boxes=True, with_labels=True):
    """Five images; masks of two structures (``lung`` as files at half the image's side, ``heart`` as
    polygons at the image's size); ``heart`` not annotated for im3; boxes on im0 and im4 (file pixels)."""
    root.mkdir(parents=True, exist_ok=True)
    images = write_images(root)
    masks = []
    for i, (h, w) in enumerate(SHAPES):
        # lung: two parts in two mask rows of the same structure (their union is the mask)
        hh, ww = h // 2, w // 2
        masks.append(dict(image_id=f"im{i}", label="lung", kind="file",
                          path=save_mask(root, f"lung{i}a.png", (hh, ww), (0, hh // 2, 0, ww // 4))))
        masks.append(dict(image_id=f"im{i}", label="lung", kind="file",
                          path=save_mask(root, f"lung{i}b.png", (hh, ww), (hh // 2, hh, ww // 2, ww))))
        if i != 3:
            x0, y0, x1, y1 = w // 4, h // 4, w // 2, h // 2
            masks.append(dict(image_id=f"im{i}", label="heart", kind="polygon", height=h, width=w,
                              polygon=[x0, y0, x1, y0, x1, y1, x0, y1]))
    boxes = pd.DataFrame([dict(image_id="im0", label="nodule", x_min=8.0, y_min=4.0, x_max=40.0, y_max=20.0),
                          dict(image_id="im4", label="mass", x_min=0.0, y_min=80.0, x_max=64.0, y_max=160.0),
                          dict(image_id="im4", label="nodule", x_min=120.0, y_min=-5.0, x_max=140.0, y_max=10.0)])
    task = Task("toy", "multilabel", ("a",)) if with_labels else None
    labels = np.zeros((len(images), 1 if with_labels else 0), np.float32)
    return Records(dataset="toy", root=root, images=images, task=task, labels=labels,
                   boxes=boxes if with_boxes else None, masks=pd.DataFrame(masks),
                   mask_label_names=("lung", "heart"))


def test_original_sizes_are_recorded_and_image_rows_unchanged(tmp_path):
    rec = make_records(tmp_path / "data")
    out = prepare(rec, tmp_path / "c", S, progress=False)
    entries = json.loads((tmp_path / "c" / "index.json").read_text())["images"]
    for i, path in enumerate(rec.absolute_paths()):
        assert out.original_size(i) == SHAPES[i] == read_image(path).shape
        assert (entries[i]["height"], entries[i]["width"]) == SHAPES[i]
        assert out.read(i).tobytes() == load_resized(path, S).tobytes()  # rows as format 2 made them


def test_masks_are_stored_at_cache_resolution_with_presence(tmp_path):
    rec = make_records(tmp_path / "data")
    out = prepare(rec, tmp_path / "c", S, progress=False)
    assert out.mask_label_names == ("lung", "heart")
    for i in range(len(SHAPES)):
        masks, present = out.masks(i)
        assert masks.shape == (2, S, S) and masks.dtype == bool and present.dtype == bool
        # lung: the union of its two rows, each a quarter/half of the (half-size) mask grid
        expected = np.zeros((S, S), bool)
        expected[: S // 2, : S // 4] = True
        expected[S // 2:, S // 2:] = True
        np.testing.assert_array_equal(masks[0], expected, err_msg=f"row {i}")
        assert present[0]
        if i == 3:  # heart not annotated: absent, and all False
            assert not present[1] and not masks[1].any()
        else:
            heart = np.zeros((S, S), bool)
            heart[S // 4: S // 2, S // 4: S // 2] = True
            np.testing.assert_array_equal(masks[1], heart, err_msg=f"row {i}")
            assert present[1]


def test_a_thin_structure_is_kept_when_it_covers_half_a_cache_pixel(tmp_path):
    """The resize rule (area average >= 0.5), not nearest sampling: a 2-px line of a 64-px mask (half of a
    4-px cache pixel) survives at 16 px even off the sampling points; a 1-px line (a quarter) does not."""
    root = tmp_path / "data"
    root.mkdir()
    images = write_images(root).iloc[[2]].reset_index(drop=True)  # the 64 x 64 image
    masks = pd.DataFrame([dict(image_id="im2", label="wire", kind="file",
                               path=save_mask(root, "thick.png", (64, 64), (0, 64, 32, 34))),  # off the centre col 34
                          dict(image_id="im2", label="hair", kind="file",
                               path=save_mask(root, "thin.png", (64, 64), (0, 64, 41, 42)))])
    rec = Records(dataset="thin", root=root, images=images, task=None, labels=np.zeros((1, 0)), masks=masks,
                  mask_label_names=("wire", "hair"))
    out = prepare(rec, tmp_path / "c", S, progress=False)
    masks, present = out.masks(0)
    assert present.all()
    assert masks[0].all(axis=0).tolist() == [c == 8 for c in range(S)]  # exactly its cache column
    assert not masks[1].any()


def test_boxes_are_mapped_into_cache_pixels_with_the_original_size(tmp_path):
    rec = make_records(tmp_path / "data")
    out = prepare(rec, tmp_path / "c", S, progress=False)
    assert out.box_label_names == ("mass", "nodule") and out.boxes_source == "records"
    boxes, labels = out.boxes(0)
    h, w = SHAPES[0]
    np.testing.assert_allclose(boxes, [[8 * S / w, 4 * S / h, 40 * S / w, 20 * S / h]], rtol=1e-6)
    assert labels.tolist() == [1] and boxes.dtype == np.float32 and labels.dtype == np.int64
    boxes, labels = out.boxes(4)  # 160 x 128 JPEG; the second box is clipped at the top edge
    np.testing.assert_allclose(boxes, [[0, 8, 8, 16], [15, 0, 16, 1]], rtol=1e-6)  # 17.5 clipped to 16
    assert labels.tolist() == [0, 1]
    for i in (1, 2, 3):
        assert out.boxes(i)[0].shape == (0, 4)


def test_boxes_are_derived_from_masks_when_there_are_none(tmp_path):
    """One box per 8-connected component of each structure's full-resolution mask, mapped with the mask's
    own size; a component under 0.01 % of the mask's area gives none."""
    root = tmp_path / "data"
    rec = make_records(root, with_boxes=False)
    # im2's lung (a 32 x 32 mask): add one pixel far from the rest: 1 px < 0.01 % of 1024? no: 0.1 %, kept;
    # im4 gets a 1-pixel speck on a large mask instead (1 / 80 / 64 < 0.01 %: dropped)
    big = np.zeros((800, 640), np.uint8)
    big[0:400, 0:160] = 255
    big[799, 639] = 255
    Image.fromarray(big).save(root / "lung4a.png")
    rec.masks.loc[rec.masks["path"] == "lung4b.png", "path"] = None
    rec = Records(dataset="toy", root=root, images=rec.images, task=rec.task, labels=rec.labels,
                  masks=rec.masks[rec.masks["path"].notna() | (rec.masks["kind"] != "file")].reset_index(drop=True),
                  mask_label_names=("lung", "heart"))
    out = prepare(rec, tmp_path / "c", S, progress=False)
    assert out.boxes_source == "masks" and out.box_label_names == ("lung", "heart")
    boxes, labels = out.boxes(0)
    order = np.lexsort((boxes[:, 0], labels))
    np.testing.assert_allclose(boxes[order], [[0, 0, 4, 8], [8, 8, 16, 16], [4, 4, 8, 8]], rtol=1e-6)
    assert labels[order].tolist() == [0, 0, 1]
    boxes, labels = out.boxes(4)
    assert sorted(labels.tolist()) == [0, 1]  # the speck gave no box
    np.testing.assert_allclose(boxes[labels == 0], [[0, 0, 4, 8]], rtol=1e-6)
    assert out.boxes(3)[1].tolist() == [0, 0]  # two lung parts, no heart


def test_an_undecodable_mask_skips_its_image_with_the_reason(tmp_path, caplog):
    rec = make_records(tmp_path / "data")
    (tmp_path / "data" / "lung1b.png").unlink()
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        out = prepare(rec, tmp_path / "c", S, progress=False, fail_fraction=0.5)
    assert out.ok.tolist() == [True, False, True, True, True]
    (image_id, path, reason), = out.failures
    assert image_id == "im1" and reason.startswith("mask") and "lung1b.png" in reason
    assert any("lung1b.png" in r.getMessage() for r in caplog.records)
    assert not out.masks(1)[1].any()


def test_changed_annotations_make_a_new_version_that_copies_the_image_rows(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data")
    first = prepare(rec, tmp_path / cache_key(rec, S), S, progress=False)
    moved = rec.boxes.copy()
    moved.loc[0, "x_max"] = 30.0
    changed = Records(dataset="toy", root=rec.root, images=rec.images, task=rec.task, labels=rec.labels,
                      boxes=moved, masks=rec.masks, mask_label_names=rec.mask_label_names)
    assert cache_key(changed, S) != cache_key(rec, S)
    decoded = []
    monkeypatch.setattr(cache_mod, "load_resized", lambda path, size: decoded.append(path) or load_resized(path, size))
    second = prepare(changed, tmp_path / cache_key(changed, S), S, progress=False)
    assert decoded == []  # every image row was copied from the first version
    assert second.boxes(0)[0][0, 2] == pytest.approx(30 * S / SHAPES[0][1])
    assert first.boxes(0)[0][0, 2] == pytest.approx(40 * S / SHAPES[0][1])
    # a mask file rewritten: a new fingerprint too, and the new mask is the one stored
    save_mask(rec.root, "lung0a.png", (20, 32), (0, 20, 0, 32))
    assert cache_key(rec, S) != first.folder.name
    third = prepare(rec, tmp_path / cache_key(rec, S), S, progress=False)
    assert third.masks(0)[0][0].all()


def test_a_format_2_folder_is_refused_in_one_line_and_rebuilt_without_decoding(tmp_path, monkeypatch, caplog):
    rec = make_records(tmp_path / "data", with_boxes=False)
    rec = Records(dataset="plain", root=rec.root, images=rec.images, task=rec.task, labels=rec.labels)
    folder = tmp_path / "c"
    prepare(rec, folder, S, progress=False)
    rows = (folder / "images.u8").read_bytes()
    index = json.loads((folder / "index.json").read_text())
    index["version"] = 2  # what arkx wrote before: no sizes, no targets
    for key in ("mask_label_names", "box_label_names", "boxes_source", "n_boxes"):
        index.pop(key)
    for e in index["images"]:
        e.pop("height"), e.pop("width")
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(CacheNotReady) as err:
        open_cache(folder)
    assert "\n" not in str(err.value) and str(folder) in str(err.value) and "version 2" in str(err.value)
    decoded = []
    monkeypatch.setattr(cache_mod, "load_resized", lambda path, size: decoded.append(path) or load_resized(path, size))
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        out = prepare(rec, folder, S, progress=False)
    assert any("rebuilding" in r.getMessage() and "format version 2" in r.getMessage() for r in caplog.records)
    assert decoded == [] and (folder / "images.u8").read_bytes() == rows
    assert out.original_size(0) == SHAPES[0] and json.loads((folder / "index.json").read_text())["version"] == 3


def test_an_interrupted_preparation_resumes_to_the_same_targets(tmp_path, monkeypatch):
    rec = make_records(tmp_path / "data", with_boxes=False)
    prepare(rec, tmp_path / "clean", S, progress=False)
    calls = []

    def stop_at_third(path, size):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(path)
        return load_resized(path, size)

    monkeypatch.setattr(cache_mod, "load_resized", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(rec, tmp_path / "c", S, progress=False, chunk_size=1)
    monkeypatch.setattr(cache_mod, "load_resized", load_resized)
    out = prepare(rec, tmp_path / "c", S, progress=False, chunk_size=1)
    for name in ("images.u8", "masks.u1", "mask_present.npy", "boxes.npy", "box_image.npy", "box_label.npy"):
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    assert [out.original_size(i) for i in range(5)] == SHAPES


def test_workers_and_repair_give_the_same_targets(tmp_path):
    rec = make_records(tmp_path / "data", with_boxes=False)
    one = prepare(rec, tmp_path / "one", S, progress=False)
    prepare(rec, tmp_path / "two", S, progress=False, workers=2, chunk_size=2)
    for name in ("images.u8", "masks.u1", "mask_present.npy", "boxes.npy", "box_label.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    with open(tmp_path / "two" / "images.u8", "r+b") as f:  # damage row 2
        f.seek(2 * S * S + 5)
        f.write(b"\xff")
    repaired = prepare(rec, tmp_path / "two", S, progress=False, repair=True)
    assert repaired.repaired == [2]
    for name in ("images.u8", "masks.u1", "mask_present.npy", "boxes.npy", "box_label.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert repaired.original_size(2) == one.original_size(2)


def _dataset(rec, images):
    return PreparedDataset(name="toy", records=rec, images=images)


def test_loaders_carry_the_requested_targets_and_default_to_labels_only(tmp_path):
    rec = make_records(tmp_path / "data")
    images = prepare(rec, tmp_path / "c", S, progress=False)
    data = _dataset(rec, images)
    assert [t.kind for t in data.tasks()] == ["multilabel", "detection", "segmentation"]
    plain = next(iter(make_loader(data, "train", 4, 0, train=False)))
    assert plain.labels is not None and plain.masks is None and plain.boxes is None
    batch = next(iter(make_loader(data, "train", 4, 0, train=False, targets=("labels", "masks", "boxes"))))
    rows = batch.rows.tolist()
    assert rows == [0, 3]
    assert batch.masks.shape == (2, 2, S, S) and batch.mask_present.tolist() == [[True, True], [True, False]]
    for k, row in enumerate(rows):
        assert torch.equal(batch.masks[k], torch.from_numpy(images.masks(row)[0]))
        assert torch.equal(batch.boxes[k], torch.from_numpy(images.boxes(row)[0]))
        assert torch.equal(batch.box_labels[k], torch.from_numpy(images.boxes(row)[1]))
    assert torch.equal(batch.images, plain.images)


def test_a_dataset_without_labels_feeds_segmentation_and_detection(tmp_path):
    from types import SimpleNamespace

    from arkx.data.loaders import prepare_dataset

    rec = make_records(tmp_path / "data", with_boxes=False, with_labels=False)
    ds_cfg = SimpleNamespace(head_name="toy", type="toy", root=rec.root, options={}, uncertain="ones",
                             lsr_ones_range=(0.55, 0.85), lsr_zeros_range=(0.0, 0.3), max_train_images=None)
    data_cfg = SimpleNamespace(resolved_cache_size=S, prepare_workers=0, fail_fraction=0.05)
    with pytest.raises(ValueError, match="no image-level labels"):
        prepare_dataset(ds_cfg, data_cfg, tmp_path / "cache", records=rec, progress=False)
    data = prepare_dataset(ds_cfg, data_cfg, tmp_path / "cache", records=rec, progress=False, require_labels=False)
    assert [t.kind for t in data.tasks()] == ["detection", "segmentation"]
    batch = next(iter(make_loader(data, "val", 4, 0, train=False, targets=("labels", "masks", "boxes"))))
    assert batch.labels is None and batch.masks.shape == (2, 2, S, S) and len(batch.boxes) == 2
    plain = _dataset(rec, prepare(Records(dataset="plain", root=rec.root, images=rec.images, task=None,
                                          labels=rec.labels), tmp_path / "plain", S, progress=False))
    with pytest.raises(ArkxValueError, match="no masks"):
        make_loader(plain, "train", 2, 0, train=False, targets=("masks",))
    with pytest.raises(ArkxValueError, match="unknown loader target"):
        make_loader(data, "train", 2, 0, train=False, targets=("pixels",))
