"""Synthetic VinDr-CXR 1.0.0 (read by :mod:`arkx.data.adapters.vindr_cxr`): ``annotations/*.csv``
(three readers per training image, one of them missing some findings; the test labels are the
consensus), boxes of the local labels, and 12/14/16-bit DICOMs (some MONOCHROME1, some with rescale
or window tags) in ``train/<image_id>.dicom`` / ``test/<image_id>.dicom``, larger and non-square.

Reader disagreement: one of the three readers of a training image (the dissenter) misses each finding
with probability 0.25, and every reader, the dissenter included, also misses each finding with
probability :data:`P_READER_MISS` (from its own random stream, so the images are those drawn before
it was modelled). When two readers miss a finding, the majority vote misses it too: the aggregated
training labels are noisy (about 7 % of present findings missed), the test labels (consensus) are the
truth. A missed finding loses that reader's label and box; readers never mark an absent finding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Site, draw_case
from ..annotations import boxes_by_label
from ..dicom import write_dicom
from ..files import fmt_num, write_csv
from ..ids import random_hex
from ..sampling import (
    MIN_POSITIVES,
    draw_seed,
    ensure_truth,
    findings_for,
    label_noise_stream,
    sample_truth,
)

VINDR_LOCAL_LABELS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion",
)  # fmt: skip
VINDR_GLOBAL_LABELS = ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "No finding")
#: the 28 label columns of annotations/image_labels_train.csv (PhysioNet VinDr-CXR 1.0.0), in file order
VINDR_LABELS = VINDR_LOCAL_LABELS + VINDR_GLOBAL_LABELS
#: image_labels_test.csv names one column differently ("Other disease", singular), as shipped
VINDR_TEST_LABELS = VINDR_LOCAL_LABELS + (
    "COPD",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
    "Other disease",
    "No finding",
)
VINDR_TRAIN_COLUMNS = ("image_id", "rad_id") + VINDR_LABELS
VINDR_TEST_COLUMNS = ("image_id",) + VINDR_TEST_LABELS
VINDR_ANNOTATION_TRAIN_COLUMNS = ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")
VINDR_ANNOTATION_TEST_COLUMNS = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")

#: dataset label -> finding concept(s) drawn for a positive (one of them, chosen per case)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "Aortic enlargement": ("aortic_enlargement",),
    "Atelectasis": ("atelectasis",),
    "Calcification": ("calcification",),
    "Cardiomegaly": ("cardiomegaly",),
    "Clavicle fracture": ("clavicle_fracture",),
    "Consolidation": ("consolidation",),
    "Edema": ("edema",),
    "Emphysema": ("emphysema",),
    "Enlarged PA": ("enlarged_pa",),
    "ILD": ("fibrosis",),
    "Infiltration": ("opacity",),
    "Lung Opacity": ("opacity",),
    "Lung cavity": ("cavity",),
    "Lung cyst": ("cyst",),
    "Mediastinal shift": ("mediastinal_shift",),
    "Nodule/Mass": ("nodule", "mass"),
    "Pleural effusion": ("effusion",),
    "Pleural thickening": ("pleural_thickening",),
    "Pneumothorax": ("pneumothorax",),
    "Pulmonary fibrosis": ("fibrosis",),
    "Rib fracture": ("rib_fracture",),
    "Other lesion": ("other_lesion",),
    "COPD": ("emphysema",),
    "Lung tumor": ("mass",),
    "Pneumonia": ("opacity", "consolidation"),
    "Tuberculosis": ("tuberculosis",),
    "Other diseases": ("other_lesion",),
}
#: latent prevalence of each label (fraction of studies/images)
PREVALENCE_BY_LABEL: dict[str, float] = (
    {label: 0.07 for label in VINDR_LABELS if label != "No finding"}
    | {"Aortic enlargement": 0.14, "Cardiomegaly": 0.12, "Pleural thickening": 0.10, "Pulmonary fibrosis": 0.10,
       "Lung Opacity": 0.10, "Other lesion": 0.08, "Other diseases": 0.10, "Tuberculosis": 0.06}
)  # fmt: skip
NORMAL_FRACTION = 0.35  # studies/images without any finding
#: probability that any one reader misses a present finding, on top of the dissenter's misses (arkx's choice)
P_READER_MISS = 0.10
#: acquisition look of this dataset
SITE = Site(
    "vindr_cxr",
    gamma=1.3,
    contrast=1.0,
    offset=0.0,
    noise=0.008,
    blur=0.3,
    border=0.05,
    border_value=0.9,
    marker=None,
)


def _vindr_dicom(path: Path, img: np.ndarray, rng, image_id: str, sex: str, age: int | None) -> dict:
    """16-bit DICOM; MONOCHROME1 stores inverted values so that a correct reader sees the same image."""
    bits = int(rng.choice([12, 14, 16], p=[0.5, 0.3, 0.2]))
    mono1 = bool(rng.random() < 0.35)
    top = 2**bits - 1
    lo, hi = 0.03 * top, 0.97 * top
    raw = np.round(lo + np.clip(img, 0, 1) * (hi - lo)).astype(np.uint16)
    if mono1:
        raw = (top - raw).astype(np.uint16)
    tags = dict(
        Modality="DX", PatientSex=sex, PatientAge="" if age is None else f"{age:03d}Y", PatientID=random_hex(rng, 16),
        BodyPartExamined="CHEST", ImagerPixelSpacing=[0.1, 0.1], PixelSpacing=[0.1, 0.1],
    )  # fmt: skip
    if rng.random() < 0.5:
        tags.update(RescaleIntercept=0.0, RescaleSlope=1.0, RescaleType="US")
    if rng.random() < 0.6:
        tags.update(WindowCenter=round(top / 2.0, 1), WindowWidth=round(hi - lo, 1))
    write_dicom(path, raw, sop_class="1.2.840.10008.5.1.4.1.1.1.1", uid_key=("vindr", image_id),
                photometric="MONOCHROME1" if mono1 else "MONOCHROME2", bits_stored=bits, tags=tags)  # fmt: skip
    return {"bits": bits, "mono1": mono1}


def reader_misses(rng, T: np.ndarray, train: np.ndarray, p: float = P_READER_MISS,
                  k: int = MIN_POSITIVES) -> np.ndarray:
    """``[n, 3, L]``: reader slot ``r`` of image ``u`` misses its finding ``j`` (only where ``T`` is true).

    Best effort: every label keeps >= k training images that no reader slot misses, so that its majority
    label has positives whichever slot the dissenter is."""
    miss = (rng.random((T.shape[0], 3, T.shape[1])) < p) & T[:, None, :]
    for j in range(T.shape[1]):
        pos = np.flatnonzero(train & T[:, j])
        need = k - int((~miss[pos, :, j].any(axis=1)).sum())
        if need > 0:
            miss[rng.permutation(pos[miss[pos, :, j].any(axis=1)])[:need], :, j] = False
    return miss


def write_vindr_cxr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """PhysioNet VinDr-CXR 1.0.0: ``annotations/*.csv``, ``train/<image_id>.dicom``, ``test/<image_id>.dicom``."""
    root = folder
    table, site = CONCEPTS_BY_LABEL, SITE
    labels = VINDR_LABELS[:-1]
    n_test = min(n - 1, max(2, int(round(0.2 * n))))
    groups = np.array(["train"] * (n - n_test) + ["test"] * n_test, dtype=object)
    T, normal = sample_truth(rng, n, [PREVALENCE_BY_LABEL[lab] for lab in labels], NORMAL_FRACTION)
    ensure_truth(rng, T, normal, groups)
    reader_miss = reader_misses(label_noise_stream(rng), T, groups == "train")
    shapes = [(int(round(1.25 * size)), size), (int(round(1.2 * size)), int(round(1.05 * size))),
              (int(round(1.1 * size)), int(round(1.2 * size)))]  # fmt: skip
    local = set(VINDR_LOCAL_LABELS)
    rads = [f"R{i}" for i in range(1, 18)]
    lab_rows = {"train": [], "test": []}
    ann_rows = {"train": [], "test": []}
    ids = set()
    for u in range(n):
        image_id = random_hex(rng, 32)
        while image_id in ids:
            image_id = random_hex(rng, 32)
        ids.add(image_id)
        r = rng.random()
        sex = "M" if r < 0.48 else ("F" if r < 0.95 else "O")
        age = None if rng.random() < 0.04 else int(np.clip(rng.normal(50, 16), 15, 90))
        pos = [(lab, 1.0) for j, lab in enumerate(labels) if T[u, j]]
        findings, owners = findings_for(rng, pos, table)
        shape = shapes[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        drawn = draw_case(Case(sex, "PA", findings, draw_seed(rng), draw_seed(rng)), shape, site)
        split = groups[u]
        _vindr_dicom(root / split / f"{image_id}.dicom", drawn.image, rng, image_id, sex, age)
        boxes = boxes_by_label(drawn, owners)
        H, W = shape
        if split == "test":
            lab_rows["test"].append(
                [image_id] + [str(int(T[u, j])) for j in range(len(labels))] + [str(int(normal[u]))]
            )
            if normal[u]:
                ann_rows["test"].append([image_id, "No finding", "", "", "", ""])
            for lab in VINDR_LOCAL_LABELS:
                for x0, y0, x1, y1 in boxes.get(lab, []):
                    ann_rows["test"].append([image_id, lab] + [fmt_num(x) for x in (x0, y0, x1, y1)])
            continue
        readers = rng.permutation(rads)[:3]
        dissenter = int(rng.integers(3))
        for k, rad in enumerate(readers):
            seen = T[u].copy()
            if k == dissenter:
                seen &= rng.random(len(labels)) >= 0.25  # the dissenter misses some findings
            # the main stream is drawn as before the extra misses (box jitter of `seen` included), so that
            # the images that follow are unchanged; `said` is what this reader records
            said = seen & ~reader_miss[u, k]
            nf = int(not said.any())
            lab_rows["train"].append([image_id, rad] + [str(int(x)) for x in said] + [str(nf)])
            if nf:
                ann_rows["train"].append([image_id, rad, "No finding", "", "", "", ""])
                if not seen.any():
                    continue
            for j, lab in enumerate(labels):
                if not seen[j] or lab not in local:
                    continue
                for x0, y0, x1, y1 in boxes.get(lab, []):
                    jx, jy = rng.integers(-2, 3, 2) * max(1, size // 128)
                    bx0, by0 = float(np.clip(x0 + jx, 0, W - 2)), float(np.clip(y0 + jy, 0, H - 2))
                    bx1, by1 = float(np.clip(x1 + jx, bx0 + 1, W)), float(np.clip(y1 + jy, by0 + 1, H))
                    if said[j]:
                        ann_rows["train"].append([image_id, rad, lab] + [fmt_num(x) for x in (bx0, by0, bx1, by1)])
    ann = root / "annotations"
    write_csv(ann / "image_labels_train.csv", VINDR_TRAIN_COLUMNS, lab_rows["train"])
    write_csv(ann / "image_labels_test.csv", VINDR_TEST_COLUMNS, lab_rows["test"])
    write_csv(ann / "annotations_train.csv", VINDR_ANNOTATION_TRAIN_COLUMNS, ann_rows["train"])
    write_csv(ann / "annotations_test.csv", VINDR_ANNOTATION_TEST_COLUMNS, ann_rows["test"])
    return root
