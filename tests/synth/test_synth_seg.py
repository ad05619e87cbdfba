"""Synthetic segmentation layouts -> adapters round trip; the masks cover the drawn anatomy."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from arkx.data.adapters import check_images_exist, read_dataset
from arkx.data.masks import rle_decode_chexmask
from arkx.data.masks import decode_mask
from arkx.data.raw_img import read_jsrt_img
from arkx.synth import WRITERS, synthesize
from arkx.synth.anatomy import Case, Finding
from arkx.synth.structures import rib_polygons, structure_masks

SEG = ("jsrt", "montgomery", "chexmask", "mask_folder")
N, SIZE = 24, 128


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = synthesize(tmp_path_factory.mktemp("seg"), seed=3, n=N, size=SIZE, datasets=SEG)
    out |= synthesize(tmp_path_factory.mktemp("ribs"), seed=3, n=16, size=192, datasets=["vindr_ribcxr"])
    return out


def load_image(rec, row) -> np.ndarray:
    path = rec.root / row["path"]
    if path.suffix.upper() == ".IMG":
        return read_jsrt_img(path)
    return np.asarray(Image.open(path), dtype=np.float32) / 255.0


def decode(row, root) -> np.ndarray:
    if row.get("encoding") == "chexmask":
        return rle_decode_chexmask(row["rle"], int(row["height"]), int(row["width"]))
    return decode_mask(row, root)


def masks_by_image(rec, image_shape=None) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for _, row in rec.masks.iterrows():
        m = decode(row, rec.root)
        out.setdefault(row["image_id"], {})[row["label"]] = m
    return out


def upsample_to(mask: np.ndarray, shape) -> np.ndarray:
    ky, kx = shape[0] // mask.shape[0], shape[1] // mask.shape[1]
    return np.kron(mask, np.ones((ky, kx), bool)).astype(bool) if (ky, kx) != (1, 1) else mask


def test_writers_registered():
    assert set(SEG) | {"vindr_ribcxr"} <= set(WRITERS)


@pytest.mark.parametrize("name", [*SEG, "vindr_ribcxr"])
def test_round_trip(roots, name):
    rec = read_dataset(name, roots[name])
    check_images_exist(rec)
    expected = 16 if name == "vindr_ribcxr" else N
    assert len(rec) == expected or (name == "chexmask" and 0.5 * N <= len(rec) < N)
    assert rec.masks is not None and set(rec.masks["image_id"]) == set(rec.images["image_id"])
    assert set(rec.images["split"]) >= {"train", "test"}
    for _, img in rec.images.iloc[:4].iterrows():
        image = load_image(rec, img)
        for _, row in rec.masks[rec.masks.image_id == img["image_id"]].iterrows():
            mask = decode(row, rec.root)
            want = tuple(s // 2 for s in image.shape) if name == "jsrt" else image.shape  # SCR: half resolution
            assert mask.shape == want, (name, row["label"])
            assert mask.any(), (name, row["label"])


@pytest.mark.parametrize("name", ["jsrt", "chexmask", "mask_folder"])
def test_lungs_darker_than_heart_and_clavicles(roots, name):
    rec = read_dataset(name, roots[name])
    masks = masks_by_image(rec)
    for _, img in rec.images.iterrows():
        image = load_image(rec, img)
        ms = {k: upsample_to(v, image.shape) for k, v in masks[img["image_id"]].items()}
        lungs = ms["Left Lung"] | ms["Right Lung"]
        assert not (lungs & ms["Heart"]).any()
        lung, heart = image[lungs].mean(), image[ms["Heart"]].mean()
        assert lung < heart - 0.05, (name, img["image_id"], lung, heart)
        if "Left Clavicle" in ms:
            clav = image[ms["Left Clavicle"] | ms["Right Clavicle"]].mean()
            assert clav > lung + 0.05, (name, img["image_id"], clav, lung)


@pytest.mark.parametrize("name", [*SEG])
def test_patient_sides(roots, name):
    """Right Lung (patient's right) lies on the image left, Left Lung on the image right."""
    rec = read_dataset(name, roots[name])
    masks = masks_by_image(rec)
    for image_id, ms in list(masks.items())[:6]:
        w = ms["Left Lung"].shape[1]
        xs_r = np.nonzero(ms["Right Lung"])[1].mean()
        xs_l = np.nonzero(ms["Left Lung"])[1].mean()
        assert xs_r < w / 2 < xs_l, (name, image_id)


def test_montgomery_lungs_darker_than_the_mediastinum(roots):
    rec = read_dataset("montgomery", roots["montgomery"])
    masks = masks_by_image(rec)
    shapes = set()
    for _, img in rec.images.iterrows():
        image = load_image(rec, img)
        shapes.add(image.shape)
        ms = masks[img["image_id"]]
        right, left = ms["Right Lung"], ms["Left Lung"]
        rows = np.flatnonzero(right.any(axis=1) & left.any(axis=1))
        x0, x1 = np.nonzero(right)[1].max() + 1, np.nonzero(left)[1].min()
        gap = image[rows[0]:rows[-1] + 1, x0:x1]
        assert image[right | left].mean() < gap.mean() - 0.05, img["image_id"]
    assert len({s[0] != s[1] for s in shapes}) == 1 and all(s[0] != s[1] for s in shapes)  # non-square


def test_jsrt_nodule_boxes_lie_in_the_chest(roots):
    rec = read_dataset("jsrt", roots["jsrt"])
    assert rec.labels[:, 0].sum() == len(rec.boxes) > 0
    masks = masks_by_image(rec)
    for _, b in rec.boxes.iterrows():
        ms = masks[b["image_id"]]
        union = upsample_to(ms["Left Lung"] | ms["Right Lung"] | ms["Heart"], (SIZE, SIZE))
        cx, cy = int((b.x_min + b.x_max) / 2), int((b.y_min + b.y_max) / 2)
        assert union[cy, cx], b["image_id"]
        assert 2 <= b.x_max - b.x_min <= SIZE / 4
    assert rec.images["sex"].notna().all()


def test_rib_polygons_lie_on_bright_bands(roots):
    rec = read_dataset("vindr_ribcxr", roots["vindr_ribcxr"])
    assert set(rec.masks["label"]) == {f"{s}{i}" for s in "RL" for i in range(1, 11)}
    for _, img in rec.images.iterrows():
        image = load_image(rec, img)
        ms = rec.masks[rec.masks.image_id == img["image_id"]]
        assert len(ms) >= 16
        on = np.zeros(image.shape, bool)
        for _, row in ms.iterrows():
            m = decode_mask(row)
            on |= m
            xs = np.nonzero(m)[1].mean()
            assert (xs < image.shape[1] / 2) == row["label"].startswith("R")
        between = np.roll(on, int(round(0.025 * min(image.shape))), axis=0) & ~on  # half a rib spacing lower
        assert image[on].mean() > image[between].mean() + 0.015, img["image_id"]


def test_chexmask_quality_filter_drops_the_bad_rows(roots):
    kept = read_dataset("chexmask", roots["chexmask"])
    every = read_dataset("chexmask", roots["chexmask"], min_dice_rca=0.0)
    assert len(every) == N and kept.notes["dropped_low_dice_rca"] == N - len(kept) > 0
    csv = pd.read_csv(roots["chexmask"] / "OriginalResolution" / "ChestX-Ray8.csv")
    dropped = set(every.images["image_id"]) - set(kept.images["image_id"])
    assert (csv.set_index("Image Index").loc[sorted(dropped), "Dice RCA (Mean)"] < 0.7).all()


def test_deterministic(tmp_path):
    def digest(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    a = synthesize(tmp_path / "a", seed=1, n=10, size=64, datasets=["montgomery", "jsrt"])
    b = synthesize(tmp_path / "b", seed=1, n=10, size=64, datasets=["montgomery", "jsrt"])
    c = synthesize(tmp_path / "c", seed=2, n=10, size=64, datasets=["montgomery"])
    for k in a:
        assert digest(a[k]) == digest(b[k])
    assert digest(a["montgomery"]) != digest(c["montgomery"])


def test_masks_refuse_moved_anatomy():
    with pytest.raises(ValueError, match="structural"):
        structure_masks(Case(findings=(Finding("cardiomegaly"),)), (64, 64))
    with pytest.raises(ValueError, match="frontal"):
        rib_polygons(Case(view="LATERAL"), (64, 64))
    ok = structure_masks(Case(findings=(Finding("nodule"),)), (64, 80))
    assert ok["Heart"].shape == (64, 80)
