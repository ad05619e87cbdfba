"""Every localization / segmentation adapter declares its box and mask heads in the provider's order, and its
targets are in the pixel frame of the image files (synthetic datasets in each provider's layout)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import arkx
from arkx.data.io import read_image
from arkx.data.masks import decode_mask

SCR = ("Right Lung", "Left Lung", "Heart", "Right Clavicle", "Left Clavicle")
RIBS = tuple(f"R{i}" for i in range(1, 11)) + tuple(f"L{i}" for i in range(1, 11))
CHESTX_DET = ("Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "Diffuse Nodule", "Effusion",
              "Emphysema", "Fibrosis", "Fracture", "Mass", "Nodule", "Pleural Thickening", "Pneumothorax")
VINDR_LOCAL = ("Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
               "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity",
               "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass", "Pleural effusion",
               "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis", "Rib fracture", "Other lesion")
NIH_BOXES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax")
TBX11K = ("ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis")
MASK_FOLDER = ("Heart", "Left Clavicle", "Left Lung", "Right Clavicle", "Right Lung")  # label folders: sorted

#: adapter -> the localization / segmentation tasks its records list ((kind, label names), in order);
#: datasets with masks only get a detection task over the mask structures (boxes derived from the masks)
EXPECTED = {
    "jsrt": [("detection", ("Nodule",)), ("segmentation", SCR)],
    "montgomery": [("detection", ("Left Lung", "Right Lung")), ("segmentation", ("Left Lung", "Right Lung"))],
    "siim_acr": [("detection", ("Pneumothorax",)), ("segmentation", ("Pneumothorax",))],
    "candid_ptx": [("detection", ("Pneumothorax",)), ("segmentation", ("Pneumothorax",))],
    "vindr_ribcxr": [("detection", RIBS), ("segmentation", RIBS)],
    "chexmask": [("detection", ("Left Lung", "Right Lung", "Heart")),
                 ("segmentation", ("Left Lung", "Right Lung", "Heart"))],
    "tbx11k": [("detection", TBX11K)],
    "node21": [("detection", ("Nodule",))],
    "chestx_det": [("detection", CHESTX_DET), ("segmentation", CHESTX_DET)],
    "vindr_cxr": [("detection", VINDR_LOCAL)],
    "nih14": [("detection", NIH_BOXES)],
    "rsna": [("detection", ("Lung Opacity",))],
    # COCO categories in id order (the synthetic file lists Nodule, Pneumothorax, Effusion)
    "coco": [("detection", ("Nodule", "Pneumothorax", "Effusion")),
             ("segmentation", ("Nodule", "Pneumothorax", "Effusion"))],
    "mask_folder": [("detection", MASK_FOLDER), ("segmentation", MASK_FOLDER)],
}
#: SCR ships its masks at half the JSRT image resolution (resized nearest when cached)
MASK_SCALE = {"jsrt": 2}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    # seed 3, 16 images: every layout gets at least one box or mask (NIH boxes only test-list images)
    return arkx.synthesize(tmp_path_factory.mktemp("loc"), seed=3, n=16, size=40, datasets=sorted(EXPECTED))


def _image_sizes(records) -> dict[str, tuple[int, int]]:
    return {i: read_image(p).shape[:2] for i, p in zip(records.images["image_id"], records.absolute_paths())}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tasks_list_the_declared_heads(name, roots):
    records = arkx.read_dataset(name, roots[name])
    tasks = [(t.kind, t.label_names) for t in records.tasks() if t.kind in ("detection", "segmentation")]
    assert tasks == EXPECTED[name]
    # the heads are fixed for the dataset: a split without any box or mask keeps them
    for split in ("train", "val", "test"):
        part = records.split(split)
        assert [(t.kind, t.label_names) for t in part.tasks() if t.kind in ("detection", "segmentation")] == tasks


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_boxes_lie_inside_their_image_file(name, roots):
    records = arkx.read_dataset(name, roots[name])
    if records.boxes is None:  # masks only: the detection task is derived from the masks
        assert records.box_label_names is None and records.mask_label_names
        return
    boxes = records.boxes
    if records.box_label_names:
        assert len(boxes) > 0, "the synthetic dataset should have boxes"
    assert set(boxes["label"]) <= set(records.box_label_names or ())
    assert set(boxes["image_id"]) <= set(records.images["image_id"])
    for split in ("train", "val", "test"):  # each split carries the boxes of its own images only
        part = records.split(split)
        assert part.boxes is not None and set(part.boxes["image_id"]) <= set(part.images["image_id"])
    sizes = _image_sizes(records)
    for row in boxes.itertuples():
        height, width = sizes[row.image_id]
        # max exclusive: a box may reach the image's width / height, never beyond
        assert 0 <= row.x_min < row.x_max <= width, (row.image_id, row.x_min, row.x_max, width)
        assert 0 <= row.y_min < row.y_max <= height, (row.image_id, row.y_min, row.y_max, height)


@pytest.mark.parametrize("name", sorted(n for n, tasks in EXPECTED.items() if tasks[-1][0] == "segmentation"))
def test_masks_are_declared_and_in_the_image_frame(name, roots):
    records = arkx.read_dataset(name, roots[name])
    assert len(records.masks) > 0
    assert set(records.masks["label"]) <= set(records.mask_label_names)
    sizes = _image_sizes(records)
    scale = MASK_SCALE.get(name, 1)
    for _, row in records.masks.iterrows():
        mask = decode_mask(row, records.root)
        assert tuple(s * scale for s in mask.shape) == sizes[row["image_id"]], row["image_id"]


def test_index_masks_follow_the_order_of_label_values(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(3):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "images" / f"p{k}.png")
        index = np.zeros((8, 8), np.uint8)
        index[:4] = 2  # "Lung"
        index[6:] = 1  # "Heart"
        Image.fromarray(index).save(tmp_path / "masks" / f"p{k}.png")
    records = arkx.read_dataset("mask_folder", tmp_path, label_values={"Lung": 2, "Heart": 1})
    assert records.mask_label_names == ("Lung", "Heart")


def _keep_one_class_nih(root):
    path = root / "BBox_List_2017.csv"
    lines = path.read_text().splitlines()
    first = lines[1].split(",")[1]
    path.write_text("\n".join([lines[0]] + [line for line in lines[1:] if line.split(",")[1] == first]) + "\n")


def _no_positive_siim(root):
    path = root / "train-rle.csv"
    frame = pd.read_csv(path, dtype=str)
    frame.iloc[:, 1] = "-1"
    frame.drop_duplicates(frame.columns[0]).to_csv(path, index=False)


def _keep_one_class_chestx_det(root):
    for path in root.glob("ChestX_Det_*.json"):
        entries = json.loads(path.read_text())
        for e in entries:
            keep = [j for j, sym in enumerate(e["syms"]) if sym == "Effusion"]
            for key in ("syms", "boxes", "polygons"):
                e[key] = [e[key][j] for j in keep]
        path.write_text(json.dumps(entries))


@pytest.mark.parametrize("name, edit", [("nih14", _keep_one_class_nih), ("siim_acr", _no_positive_siim),
                                        ("chestx_det", _keep_one_class_chestx_det)])
def test_heads_do_not_depend_on_which_classes_occur(name, edit, roots, tmp_path):
    # the same provider files with fewer classes annotated: the heads keep the provider's full class list
    root = tmp_path / name
    shutil.copytree(roots[name], root)
    edit(root)
    records = arkx.read_dataset(name, root)
    assert records.boxes is None or records.boxes["label"].nunique() <= 1
    tasks = [(t.kind, t.label_names) for t in records.tasks() if t.kind in ("detection", "segmentation")]
    assert tasks == EXPECTED[name]


@pytest.mark.parametrize("name, exhaustive", [("siim_acr", True), ("chestx_det", True), ("jsrt", False)])
def test_an_image_without_a_mask_row_is_an_empty_mask_only_where_annotation_is_exhaustive(name, exhaustive, roots,
                                                                                         tmp_path):
    """SIIM-ACR (-1 = no pneumothorax) and ChestX-Det (no polygon of a finding = none) annotate every image: a
    missing mask row is an empty mask that trains and scores. Elsewhere it means 'not annotated'."""
    from arkx.data.loaders import make_loader, prepare_images

    records = arkx.read_dataset(name, roots[name])
    assert records.masks_exhaustive is exhaustive
    if not exhaustive:  # JSRT ships every structure of every image: drop some rows (a partial annotation)
        records = dataclasses.replace(records, masks=records.masks.iloc[::3].reset_index(drop=True))
    images = prepare_images(records, tmp_path, 32, progress=False)
    data = type("Data", (), dict(name=name, records=records, images=images,
                                 indices=lambda self, split: np.flatnonzero(images.ok)))()
    batch = next(iter(make_loader(data, "train", 64, 0, train=False, targets=("masks",))))
    rows_with_masks = {tuple(r) for r in records.masks[["image_id", "label"]].itertuples(index=False)}
    ids = records.images["image_id"].to_numpy()[batch.rows.numpy()]
    annotated = np.array([[(i, label) in rows_with_masks for label in records.mask_label_names] for i in ids])
    assert not annotated.all(), "the fixture must have images without some structure's mask row"
    expected = np.ones_like(annotated) if exhaustive else annotated
    np.testing.assert_array_equal(batch.mask_present.numpy(), expected)
    assert not batch.masks.numpy()[~annotated].any()  # no row: the mask itself is empty
