"""The public dataset object and image helpers: samples carry their own record's fields, originals and the
cache give the same pixels, a plain DataLoader batches them, load_image reads as training reads, preprocess
is the evaluation view's normalisation, and a tensor out of [0, 1] is flagged."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import arkx
from arkx.data.dataset import ImageDataset, InputRangeWarning, collate, load_image, preprocess
from arkx.data.io import load_resized, read_image
from arkx.data.masks import decode_mask
from arkx.data.transforms import eval_view
from arkx.errors import ArkxValueError


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset-synth")
    return arkx.synthesize(out, seed=3, n=16, size=40, datasets=["rsna", "nih14", "jsrt", "shenzhen"])


def test_a_sample_carries_its_records_row(roots):
    records = arkx.read_dataset("rsna", roots["rsna"])
    ds = ImageDataset(records)
    with_box = records.boxes["image_id"].iloc[-1]
    row = int(np.flatnonzero(records.images["image_id"].to_numpy() == with_box)[0])
    assert row > 0  # a row other than the first, so an off-by-one shows
    sample = ds[row]
    info = records.images.iloc[row]
    assert (sample["image_id"], sample["patient_id"], sample["split"]) == (info["image_id"], info["patient_id"],
                                                                           info["split"])
    np.testing.assert_array_equal(sample["labels"].numpy(), records.labels[row])  # NaN where NaN
    assert sample["label_names"] == ("Normal", "No Lung Opacity / Not Normal", "Lung Opacity")
    expected = records.boxes[records.boxes["image_id"] == with_box]
    np.testing.assert_array_equal(sample["boxes"].numpy(), expected[["x_min", "y_min", "x_max", "y_max"]].to_numpy())
    assert sample["box_labels"] == list(expected["label"])
    assert [ds.box_names[c] for c in sample["box_classes"]] == sample["box_labels"]
    np.testing.assert_array_equal(sample["image"][0].numpy(), read_image(records.root / info["path"]))


def test_a_split_keeps_only_its_rows(roots):
    records = arkx.read_dataset("nih14", roots["nih14"])
    ds = ImageDataset("nih14", roots["nih14"], split="test")
    expected = list(records.images.loc[records.images["split"] == "test", "image_id"])
    assert [ds[i]["image_id"] for i in range(len(ds))] == expected and 0 < len(ds) < len(records)


def test_masks_are_the_decoded_mask_rows(roots):
    records = arkx.read_dataset("jsrt", roots["jsrt"])
    ds = ImageDataset(records)
    sample = ds[2]
    rows = records.masks[records.masks["image_id"] == sample["image_id"]]
    assert sample["mask_labels"] == list(rows["label"]) and len(rows) > 1
    for mask, (_, row) in zip(sample["masks"], rows.iterrows()):
        np.testing.assert_array_equal(mask.numpy(), decode_mask(row, records.root))


@pytest.mark.parametrize("name", ["rsna", "nih14"])  # DICOM, PNG
def test_originals_and_the_cache_give_the_same_pixels(roots, tmp_path, name):
    original = ImageDataset(name, roots[name], size=32)
    cached = ImageDataset(name, roots[name], source="cache", cache_dir=tmp_path / "cache", size=32)
    assert len(original) == len(cached)
    for i in range(len(original)):
        a, b = original[i], cached[i]
        assert a["image_id"] == b["image_id"] and a["image"].shape == (1, 32, 32)
        torch.testing.assert_close(a["image"], b["image"], rtol=0, atol=0)


def test_a_plain_dataloader_batches_samples(roots):
    loader = DataLoader(ImageDataset("shenzhen", roots["shenzhen"], size=32), batch_size=4)  # no boxes: default collate
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["labels"].shape == (4, 1)
    assert len(batch["image_id"]) == 4
    ragged = DataLoader(ImageDataset("rsna", roots["rsna"], size=32), batch_size=4, collate_fn=collate)
    counts = []
    for batch in ragged:
        assert batch["image"].shape[1:] == (1, 32, 32) and batch["labels"].shape[1] == 3
        assert batch["label_names"][2] == "Lung Opacity"
        assert isinstance(batch["boxes"], list) and len(batch["boxes"]) == len(batch["image_id"])
        counts += [len(b) for b in batch["boxes"]]
    assert len(counts) == 16 and len(set(counts)) > 1  # boxes really are ragged and every sample came through


@pytest.mark.parametrize("name,suffix", [("rsna", ".dcm"), ("nih14", ".png")])
def test_load_image_reads_as_training_reads(roots, name, suffix):
    records = arkx.read_dataset(name, roots[name])
    path = records.absolute_paths()[1]
    assert path.suffix == suffix
    image = load_image(path)
    assert image.dtype == torch.float32 and image.shape[0] == 1
    np.testing.assert_array_equal(image[0].numpy(), read_image(path))
    np.testing.assert_array_equal((load_image(path, 24)[0] * 255).round().numpy(), load_resized(path, 24))


def test_preprocess_is_the_evaluation_view(roots):
    u8 = torch.randint(0, 256, (3, 1, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = eval_view(u8, 32)
    torch.testing.assert_close(preprocess(u8.float() / 255, 32), expected)
    torch.testing.assert_close(preprocess(u8, 32), expected)
    torch.testing.assert_close(preprocess(u8[0].float() / 255, 32), expected[0])  # one image [1, H, W]
    assert preprocess(u8[0, 0].numpy(), 40).shape == (3, 40, 40)


def test_a_range_that_is_not_unit_is_flagged(roots):
    image = load_image(arkx.read_dataset("nih14", roots["nih14"]).absolute_paths()[0])
    with pytest.warns(InputRangeWarning, match="0-255"):
        preprocess(image * 255, 32)
    with pytest.warns(InputRangeWarning, match="normalised"):
        preprocess(preprocess(image, 32)[:1], 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preprocess(image, 32)


def test_bad_arguments_are_one_line_errors(roots):
    with pytest.raises(ArkxValueError, match="source"):
        ImageDataset("nih14", roots["nih14"], source="disk")
    with pytest.raises(ArkxValueError, match="cache_dir"):
        ImageDataset("nih14", roots["nih14"], source="cache")
    with pytest.raises(ArkxValueError, match="grayscale"):
        preprocess(torch.zeros(3, 8, 8), 8)


@pytest.mark.parametrize("source", ["original", "cache"])
def test_boxes_follow_the_image_when_it_is_resized(roots, tmp_path, source):
    """Boxes are in file pixels; with ``size`` the image is ``size x size``, so they are scaled by
    ``size / width`` and ``size / height`` of the original (they were not scaled before)."""
    records = arkx.read_dataset("rsna", roots["rsna"])
    with_box = records.boxes["image_id"].iloc[-1]
    row = int(np.flatnonzero(records.images["image_id"].to_numpy() == with_box)[0])
    height, width = read_image(records.root / records.images["path"].iloc[row]).shape
    size = 24
    ds = ImageDataset(records, source=source, size=size, cache_dir=tmp_path / "cache")
    i = int(np.flatnonzero(ds.rows == row)[0])
    sample = ds[i]
    assert sample["image"].shape == (1, size, size)
    expected = records.boxes[records.boxes["image_id"] == with_box][["x_min", "y_min", "x_max", "y_max"]].to_numpy()
    expected = expected * np.array([size / width, size / height] * 2)
    np.testing.assert_allclose(sample["boxes"].numpy(), expected, rtol=1e-6)
    assert (height, width) != (size, size)  # the scaling is really exercised
