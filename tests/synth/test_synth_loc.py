"""Localization writers -> adapters round trip: what the adapters read back is what was drawn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from scipy import ndimage

from arkx.data import masks as M
from arkx.data.adapters import read_dataset
from arkx.data.mha import read_mha
from arkx.synth import dataset_rng, synthesize
from arkx.synth.anatomy import Case, Finding, draw_case, to_uint8
from arkx.synth.annotations import zero_strength
from arkx.synth.providers import GENERATORS
from arkx.synth.providers import SITES as LOC_SITES

N, SIZE, SEED = 30, 64, 3
NAMES = tuple(GENERATORS)  # the localization layouts


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("loc"), seed=SEED, n=N, size=SIZE, datasets=NAMES)


def generated(name):
    return GENERATORS[name](dataset_rng(SEED, name), N, SIZE)


def assert_on_drawn_pixels(im, site, concepts):
    """The mask covers the pixels its finding changed: redraw with the finding at strength 0."""
    mask = im.mask()
    base = draw_case(zero_strength(im.case, concepts), im.image.shape, site).image
    diff = np.abs(im.image - base)
    outside = ~ndimage.binary_dilation(mask, iterations=3)
    assert diff[mask].mean() > 5 * (diff[outside].mean() + 1e-4), im.image_id
    assert (diff[mask] > 0.01).mean() > 0.5, im.image_id


@pytest.mark.parametrize("concepts", [("pneumothorax",), ("tuberculosis", "effusion"), ("nodule", "cardiomegaly"),
                                      ("rib_fracture", "devices", "mass"), ()])
def test_drawn_components_are_tight_boxes_of_their_regions(concepts):
    case = Case("F", "PA", tuple(Finding(c) for c in concepts), anatomy_seed=5, seed=9)
    got = draw_case(case, (72, 64), LOC_SITES["siim_acr"])
    assert set(got.components) == ({i for i in range(len(concepts))} if concepts else set())
    for i, comps in got.components.items():
        assert got.mask(i).any()
        for box, mask in comps:
            assert M.mask_to_box(mask) == tuple(int(v) for v in box)
    assert got.boxes == {i: [b for b, _ in comps] for i, comps in got.components.items()}


def test_all_writers_registered():
    from arkx.synth import WRITERS as ALL

    assert {"siim_acr", "candid_ptx", "tbx11k", "node21", "chestx_det", "coco"} <= set(ALL)


@pytest.mark.parametrize("name", ["siim_acr", "candid_ptx"])
def test_pneumothorax_round_trip(roots, name):
    rec = read_dataset(name, roots[name])
    gen = {im.image_id: im for im in generated(name)}
    assert rec.images["image_id"].tolist() == list(gen)
    masks = rec.masks.set_index("image_id")
    for i, (iid, path) in enumerate(zip(rec.images["image_id"], rec.images["path"])):
        im = gen[iid]
        truth = im.mask("Pneumothorax")
        assert rec.labels[i, 0] == float(truth.any())
        if truth.any():
            np.testing.assert_array_equal(M.decode_mask(masks.loc[iid], rec.root), truth)
            boxes = rec.boxes[rec.boxes["image_id"] == iid][["x_min", "y_min", "x_max", "y_max"]]
            assert sorted(map(tuple, boxes.values.astype(int).tolist())) == sorted(M.component_boxes(truth))
            assert_on_drawn_pixels(im, LOC_SITES[name], {"pneumothorax"})
        else:
            assert iid not in masks.index
        if i < 5:
            np.testing.assert_array_equal(pydicom.dcmread(rec.root / path).pixel_array, to_uint8(im.image))
    assert 3 <= rec.labels.sum() <= N - 3
    if name == "siim_acr":
        raw = pd.read_csv(rec.root / "train-rle.csv", dtype=str)
        assert len(raw) > rec.labels.sum() + (rec.labels == 0).sum()  # some masks written as several rows
        assert rec.notes["images_with_several_rle_rows"] > 0
    else:
        assert rec.images["patient_id"].nunique() < len(rec)


def test_tbx11k_round_trip(roots):
    rec = read_dataset("tbx11k", roots["tbx11k"], split="official")
    gen = {im.image_id: im for im in generated("tbx11k")}
    assert set(rec.images["image_id"]) == set(gen)
    for i, iid in enumerate(rec.images["image_id"]):
        im = gen[iid]
        if im.meta["part"] == "test":
            assert np.isnan(rec.labels[i]).all()
            continue
        assert rec.labels[i].tolist() == [float(im.meta["class"] == c) for c in ("health", "sick", "tb")]
        got = rec.boxes[rec.boxes["image_id"] == iid]
        want = [(lab, *b) for lab, b, _ in im.findings]
        assert sorted(zip(got["label"], got["x_min"], got["y_min"], got["x_max"], got["y_max"])) == sorted(want)
        if im.findings:
            assert_on_drawn_pixels(im, LOC_SITES["tbx11k"], {"tuberculosis"})
    assert rec.labels[:, 2][rec.images["split"].to_numpy() == "val"].sum() >= 2
    img = np.asarray(Image.open(rec.root / rec.images["path"][0]))
    np.testing.assert_array_equal(img, to_uint8(gen[rec.images["image_id"][0]].image))


def test_node21_round_trip(roots):
    rec = read_dataset("node21", roots["node21"])
    gen = {im.image_id: im for im in generated("node21")}
    assert rec.images["image_id"].tolist() == list(gen)
    for i, iid in enumerate(rec.images["image_id"]):
        im = gen[iid]
        assert rec.labels[i, 0] == float(bool(im.findings))
        got = rec.boxes[rec.boxes["image_id"] == iid][["x_min", "y_min", "x_max", "y_max"]].values.tolist()
        assert sorted(map(tuple, got)) == sorted(tuple(b) for _, b, _ in im.findings)
        if im.findings:
            assert_on_drawn_pixels(im, LOC_SITES["node21"], {"nodule"})
    pixels = read_mha(rec.root / rec.images["path"][0])
    np.testing.assert_array_equal(pixels, np.round(np.clip(gen[rec.images["image_id"][0]].image, 0, 1) * 4095))


def test_chestx_det_round_trip(roots):
    rec = read_dataset("chestx_det", roots["chestx_det"])
    gen = {im.image_id: im for im in generated("chestx_det")}
    assert set(rec.images["image_id"]) == set(gen)
    additive = {"atelectasis", "calcification", "consolidation", "nodule", "effusion", "mass",  # fibrosis: whole-lung region
                "pleural_thickening", "pneumothorax"}
    checked = 0
    for iid, group in rec.masks.groupby("image_id", sort=False):
        im = gen[iid]
        assert group["label"].tolist() == [lab for lab, _, _ in im.findings]
        for row, (_, box, mask) in zip(group.to_dict("records"), im.findings):
            np.testing.assert_array_equal(M.decode_mask(row, rec.root), mask)
        concepts = {f.concept for f in im.case.findings}
        if concepts <= additive:
            assert_on_drawn_pixels(im, LOC_SITES["chestx_det"], concepts)
            checked += 1
    assert checked >= 3
    b = rec.boxes.groupby("image_id", sort=False)
    for iid, group in b:
        assert [tuple(r) for r in group[["x_min", "y_min", "x_max", "y_max"]].values.tolist()] == \
            [b_ for _, b_, _ in gen[iid].findings]
    assert rec.labels.sum(axis=0).min() >= 0 and (rec.labels.sum(axis=0) > 0).sum() >= 10


def test_coco_example_round_trip(roots):
    rec = read_dataset("coco", roots["coco"])
    gen = {im.image_id: im for im in generated("coco")}
    assert set(rec.images["split"]) == {"train", "val", "test"}
    assert set(rec.masks["encoding"].dropna()) == {"coco", "coco-compressed"} and "polygon" in set(rec.masks["kind"])
    for iid, group in rec.masks.groupby("image_id", sort=False):
        im = gen[iid]
        assert group["label"].tolist() == [lab for lab, _, _ in im.findings]
        for row, (_, _, truth) in zip(group.to_dict("records"), im.findings):
            got = M.decode_mask(row, rec.root)
            if row["kind"] == "polygon":  # polygons carry each 4-connected part, holes filled
                labels, n = ndimage.label(truth)
                truth = np.logical_or.reduce([ndimage.binary_fill_holes(labels == k) for k in range(1, n + 1)])
            np.testing.assert_array_equal(got, truth)
            box = rec.boxes[(rec.boxes["image_id"] == iid) & (rec.boxes["label"] == row["label"])]
            assert tuple(M.mask_to_box(truth)) in set(map(tuple, box[["x_min", "y_min", "x_max", "y_max"]]
                                                          .values.astype(int).tolist()))


def test_summary_counts_mask_pixels(roots):
    from arkx.data.summary import format_summary, summarize

    rec = read_dataset("chestx_det", roots["chestx_det"])
    gen = generated("chestx_det")
    s = summarize(rec)
    want_pixels, want_masks = {}, {}
    for im in gen:
        for lab, _, m in im.findings:
            want_pixels[lab] = want_pixels.get(lab, 0) + int(m.sum())
            want_masks[lab] = want_masks.get(lab, 0) + 1
    assert s["mask_pixels_per_class"] == dict(sorted(want_pixels.items()))
    assert s["masks_per_class"] == dict(sorted(want_masks.items()))
    assert s["boxes"] == s["masks_per_class"] and "mask_decode_errors" not in s
    assert "mask_pixels_per_class" in format_summary(s)
    broken = rec.masks.copy()
    broken.loc[0, "polygon"] = None
    rec.masks = broken
    s = summarize(rec)
    assert s["mask_decode_errors"]["count"] == 1
    assert summarize(read_dataset("node21", roots["node21"]))["masks_per_class"] is None
