"""Synthetic NIH ChestX-ray14 (read by :mod:`arkx.data.adapters.nih14`): ``Data_Entry_2017_v2020.csv``
and ``BBox_List_2017.csv`` with their shipped headers, ``train_val_list.txt`` / ``test_list.txt``
(patient-disjoint) and ``images_NNN/images/*.png``; boxes of the eight box labels for test images.

Label noise: NIH's labels were text-mined from reports, so ``Finding Labels`` is what a miner records
from the drawn truth (:func:`~arkx.synth.sampling.mine_text_labels`): a present finding is missed with
probability :data:`P_MISSED` (the image still shows it), an absent one mentioned with probability
:data:`P_FALSE_MENTION` (the image does not show it), in every split as in the real files. Boxes are
given only for recorded labels. The noise has its own random stream, so the images are those drawn
before label noise was modelled.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..anatomy import Case, Site, draw_case
from ..annotations import boxes_by_label
from ..files import fmt_num, save_gray, write_csv
from ..sampling import (
    draw_seed,
    ensure_truth,
    findings_for,
    label_noise_stream,
    mine_text_labels,
    sample_truth,
    sex_age,
    split_by_quota,
)

NIH14_LABELS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip
#: header of Data_Entry_2017_v2020.csv exactly as shipped (two bracketed headers contain commas)
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
#: header of BBox_List_2017.csv exactly as shipped (three trailing empty names)
NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
#: the eight labels with boxes, and how BBox_List_2017 spells them
NIH_BBOX_LABELS = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Effusion",
    "Infiltration": "Infiltrate", "Mass": "Mass", "Nodule": "Nodule", "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}  # fmt: skip

#: dataset label -> finding concept(s) drawn for a positive (one of them, chosen per case)
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis",),
    "Cardiomegaly": ("cardiomegaly",),
    "Effusion": ("effusion",),
    "Infiltration": ("opacity",),
    "Mass": ("mass",),
    "Nodule": ("nodule",),
    "Pneumonia": ("opacity", "consolidation"),
    "Pneumothorax": ("pneumothorax",),
    "Consolidation": ("consolidation",),
    "Edema": ("edema",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("fibrosis",),
    "Pleural_Thickening": ("pleural_thickening",),
    "Hernia": ("hernia",),
}
#: latent prevalence of each label (fraction of studies/images)
PREVALENCE_BY_LABEL: dict[str, float] = {
    "Atelectasis": 0.12, "Cardiomegaly": 0.07, "Effusion": 0.14, "Infiltration": 0.18, "Mass": 0.07,
    "Nodule": 0.08, "Pneumonia": 0.06, "Pneumothorax": 0.07, "Consolidation": 0.06, "Edema": 0.06,
    "Emphysema": 0.06, "Fibrosis": 0.06, "Pleural_Thickening": 0.06, "Hernia": 0.05,
}
NORMAL_FRACTION = 0.35  # studies/images without any finding
#: text-mined labels: fraction of present findings not recorded, of absent findings recorded (arkx's choice)
P_MISSED = 0.10
P_FALSE_MENTION = 0.005
#: acquisition look of this dataset
SITE = Site(
    "nih14",
    gamma=0.85,
    contrast=1.0,
    offset=0.0,
    noise=0.012,
    blur=0.9,
    border_top=0.03,
    marker="tl",
    marker_seed=2,
)


def write_nih14(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``Data_Entry_2017_v2020.csv``, ``BBox_List_2017.csv``, ``train_val_list.txt``, ``test_list.txt`` and
    ``images_NNN/images/*.png``."""
    root = folder
    table, site = CONCEPTS_BY_LABEL, SITE
    images = []  # (patient, follow-up, age, sex, view, anatomy seed)
    pid = 0
    while len(images) < n:
        pid += 1
        sex, age = sex_age(rng, 0.44, 1, 94)
        aseed = draw_seed(rng)
        k = int(min(5, rng.geometric(0.5), n - len(images)))
        for fu in range(k):
            images.append((pid, fu, min(95, age + fu // 2), sex, "PA" if rng.random() < 0.6 else "AP", aseed))
    split_of_patient = dict(zip(range(1, pid + 1), split_by_quota(rng, pid, {"train_val": 0.77, "test": 0.23})))
    groups = np.array([split_of_patient[im[0]] for im in images], dtype=object)
    T, normal = sample_truth(
        rng, len(images), [PREVALENCE_BY_LABEL[lab] for lab in NIH14_LABELS], NORMAL_FRACTION
    )
    ensure_truth(rng, T, normal, groups)
    recorded = mine_text_labels(label_noise_stream(rng), T, normal, groups, P_MISSED, P_FALSE_MENTION)
    entries, bbox_rows = [], []
    sizes = [(2500, 2048, 0.168), (2048, 2500, 0.168), (2992, 2991, 0.143), (3056, 2544, 0.139), (2021, 2021, 0.194311)]
    names = [f"{p:08d}_{fu:03d}.png" for p, fu, *_ in images]
    chunk = max(1, math.ceil(len(images) / 5))
    bounds = [max(1, chunk // 2)]
    while bounds[-1] < len(images):
        bounds.append(bounds[-1] + chunk)
    for u, (p, fu, age, sex, view, aseed) in enumerate(images):
        pos = [(lab, 1.0) for j, lab in enumerate(NIH14_LABELS) if T[u, j]]
        findings, owners = findings_for(rng, pos, table)
        drawn = draw_case(Case(sex, view, findings, aseed, draw_seed(rng)), (size, size), site)
        folder_no = 1 + sum(u >= b for b in bounds)
        save_gray(root / f"images_{folder_no:03d}" / "images" / names[u], drawn.image, "PNG")
        w, h, sp = sizes[int(rng.integers(len(sizes)))]
        said = {lab for j, lab in enumerate(NIH14_LABELS) if recorded[u, j]}
        text = "|".join(sorted(said)) or "No Finding"
        entries.append(
            [names[u], text, str(fu), str(p), str(age), sex, view, str(w), str(h), fmt_num(sp), fmt_num(sp)]
        )
        if groups[u] == "test":
            for label, boxes in boxes_by_label(drawn, owners).items():
                if label in NIH_BBOX_LABELS and label in said:
                    x0, y0, x1, y1 = boxes[0]
                    bbox_rows.append(
                        [
                            names[u],
                            NIH_BBOX_LABELS[label],
                            fmt_num(x0),
                            fmt_num(y0),
                            fmt_num(x1 - x0),
                            fmt_num(y1 - y0),
                        ]
                    )
    write_csv(root / "Data_Entry_2017_v2020.csv", None, entries, raw_header=NIH_HEADER)
    write_csv(root / "BBox_List_2017.csv", None, bbox_rows, raw_header=NIH_BBOX_HEADER)
    (root / "train_val_list.txt").write_text("".join(f"{nm}\n" for nm, g in zip(names, groups) if g == "train_val"))
    (root / "test_list.txt").write_text("".join(f"{nm}\n" for nm, g in zip(names, groups) if g == "test"))
    return root
