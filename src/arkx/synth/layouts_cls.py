"""Synthetic writers of more classification layouts: CXR-LT, COVIDx, pediatric pneumonia, MedFMC ChestDR,
and small examples for the generic ``csv`` and ``folder`` adapters.

Each ``write_<name>(folder, rng, n, size)`` fills ``folder`` the way the provider ships the data and
returns the dataset root its adapter is pointed at (see the adapter modules for the layouts). As in
:mod:`.layouts`, the latent truth is sampled first, patients are assigned to the official splits
(patient-disjoint), every label gets positives in every split where the image count allows
(``_ensure_truth``), and images are drawn from the truth with the shared finding concepts, so a model
that learns "effusion" on NIH recognises ``pleural_effusion`` on ChestDR.

Example options for the generic writers' output (``WRITERS["csv"]`` / ``WRITERS["folder"]``)::

    {type: csv, root: OUT/csv/my_csv_dataset, options: {csv: labels.csv, patient_column: patient,
     split_column: split, sex_column: sex, age_column: age, view_column: view}}
    {type: folder, root: OUT/folder/my_folder_dataset, options: {patient_regex: "^(P\\d+)_"}}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.adapters._common import carve_validation
from .anatomy import Case, Finding, Site
from .layouts import (
    LABEL_CONCEPTS,
    SITES,
    _draw,
    _ensure_truth,
    _findings,
    _hex,
    _mimic_dicom_id,
    _sample_truth,
    _save_gray,
    _seed,
    _sex_age,
    _split_by_quota,
    _write_csv,
)

# ----------------------------------------------------------------------------------------- labels

#: CXR-LT 2023 label columns, in file order (alphabetical; "No Finding" among them)
CXR_LT_LABELS = (
    "Atelectasis", "Calcification of the Aorta", "Cardiomegaly", "Consolidation", "Edema", "Emphysema",
    "Enlarged Cardiomediastinum", "Fibrosis", "Fracture", "Hernia", "Infiltration", "Lung Lesion", "Lung Opacity",
    "Mass", "No Finding", "Nodule", "Pleural Effusion", "Pleural Other", "Pleural Thickening", "Pneumomediastinum",
    "Pneumonia", "Pneumoperitoneum", "Pneumothorax", "Subcutaneous Emphysema", "Support Devices", "Tortuous Aorta",
)  # fmt: skip
CXR_LT_META = ("dicom_id", "subject_id", "study_id", "fpath")

CHESTDR_LABELS = (
    "pleural_effusion", "nodule", "pneumonia", "cardiomegaly", "hilar_enlargement", "fracture_old", "fibrosis",
    "aortic_calcification", "tortuous_aorta", "thickened_pleura", "TB", "pneumothorax", "emphysema", "atelectasis",
    "calcification", "pulmonary_edema", "increased_lung_markings", "elevated_diaphragm", "consolidation",
)  # fmt: skip

GENERIC_CSV_LABELS = ("Cardiomegaly", "Effusion", "Nodule", "Pneumothorax")
GENERIC_FOLDER_CLASSES = ("Cardiomegaly", "Effusion", "Normal", "Pneumothorax")

#: label -> finding concept(s), for the label names the Ark-6 table (``layouts.LABEL_CONCEPTS``) lacks.
#: Labels without a drawable equivalent borrow the nearest concept (noted per label).
_CONCEPTS: dict[str, dict[str, tuple[str, ...]]] = {
    "cxr_lt": {
        **{k: v for k, v in LABEL_CONCEPTS["chexpert"].items()},
        "Calcification of the Aorta": ("calcification",),
        "Emphysema": ("emphysema",),
        "Fibrosis": ("fibrosis",),
        "Hernia": ("hernia",),
        "Infiltration": ("opacity",),
        "Mass": ("mass",),
        "Nodule": ("nodule",),
        "Pleural Thickening": ("pleural_thickening",),
        "Pneumomediastinum": ("wide_mediastinum",),  # nearest: mediastinal contour change
        "Pneumoperitoneum": ("cyst",),  # nearest: a dark air space
        "Subcutaneous Emphysema": ("emphysema",),  # nearest: hyperlucency
        "Tortuous Aorta": ("aortic_enlargement",),
    },
    "chestdr": {
        "pleural_effusion": ("effusion",),
        "nodule": ("nodule",),
        "pneumonia": ("opacity", "consolidation"),
        "cardiomegaly": ("cardiomegaly",),
        "hilar_enlargement": ("enlarged_pa",),
        "fracture_old": ("rib_fracture",),
        "fibrosis": ("fibrosis",),
        "aortic_calcification": ("calcification",),
        "tortuous_aorta": ("aortic_enlargement",),
        "thickened_pleura": ("pleural_thickening",),
        "TB": ("tuberculosis",),
        "pneumothorax": ("pneumothorax",),
        "emphysema": ("emphysema",),
        "atelectasis": ("atelectasis",),
        "calcification": ("calcification",),
        "pulmonary_edema": ("edema",),
        "increased_lung_markings": ("fibrosis",),  # nearest: reticular texture
        "elevated_diaphragm": ("atelectasis",),  # nearest: volume loss
        "consolidation": ("consolidation",),
    },
    "csv": {"Cardiomegaly": ("cardiomegaly",), "Effusion": ("effusion",), "Nodule": ("nodule",),
            "Pneumothorax": ("pneumothorax",)},
}

SITES_CLS: dict[str, Site] = {
    "cxr_lt": SITES["mimic_cxr"],  # CXR-LT images are MIMIC-CXR-JPG images
    "covidx": Site("covidx", gamma=1.1, contrast=0.92, offset=0.04, noise=0.03, blur=0.8, border=0.03,
                   marker="tr", marker_seed=11),
    "pediatric_pneumonia": Site("pediatric_pneumonia", gamma=0.9, contrast=1.1, offset=-0.03, noise=0.018,
                                blur=0.6, border=0.06, border_top=0.04, marker="tl", marker_seed=12),
    "chestdr": Site("chestdr", gamma=1.2, contrast=1.0, offset=0.0, noise=0.01, blur=0.4, marker="br",
                    marker_seed=13),
    "csv": Site("csv", gamma=1.0, contrast=1.0, offset=0.01, noise=0.02, blur=0.5, marker=None),
    "folder": Site("folder", gamma=0.95, contrast=1.05, offset=0.0, noise=0.02, blur=0.5, marker="bl",
                   marker_seed=14),
}  # fmt: skip


def _groups_for(units_per_patient: list[int], rng, fractions: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level split (quota-shuffled) and the split of every unit, in patient order."""
    split_of_patient = _split_by_quota(rng, len(units_per_patient), fractions)
    groups = np.array([split_of_patient[p] for p, k in enumerate(units_per_patient) for _ in range(k)], dtype=object)
    return split_of_patient, groups


# ----------------------------------------------------------------------------------------- CXR-LT


def write_cxr_lt(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``cxr-lt-2023/{train,development,test}.csv`` (dicom_id, subject_id, study_id, fpath, 26 classes 0/1)
    and the MIMIC-CXR-JPG images they name under ``cxr-lt-2023/files/pXX/pNNNNNNNN/sNNNNNNNN/``."""
    root = folder / "cxr-lt-2023"
    table, site = _CONCEPTS["cxr_lt"], SITES_CLS["cxr_lt"]
    labels = tuple(lab for lab in CXR_LT_LABELS if lab != "No Finding")
    subjects, studies = [], []  # studies: (subject index, study_id, views)
    used_s, used_t, count = set(), set(), 0
    while count < n:
        sid = int(rng.integers(10_000_000, 20_000_000))
        if sid in used_s:
            continue
        used_s.add(sid)
        sex, _ = _sex_age(rng, 0.47)
        subjects.append((sid, sex, _seed(rng)))
        for _ in range(int(min(3, rng.geometric(0.55)))):
            st = int(rng.integers(50_000_000, 60_000_000))
            while st in used_t:
                st = int(rng.integers(50_000_000, 60_000_000))
            used_t.add(st)
            r = rng.random()
            views = ("PA", "LATERAL") if r < 0.35 else (("AP",) if r < 0.8 else ("PA",))
            studies.append((len(subjects) - 1, st, views))
            count += len(views)
    split_of_subject = _split_by_quota(rng, len(subjects), {"train": 0.7, "development": 0.12, "test": 0.18})
    groups = np.array([split_of_subject[s] for s, _, _ in studies], dtype=object)
    # long-tailed prevalence: head labels ~30%, tail labels ~3%
    ranks = rng.permutation(len(labels))
    prev = [float(np.clip(0.32 * 0.86 ** r, 0.03, 0.32)) for r in ranks]
    T, normal = _sample_truth(rng, len(studies), prev, 0.25)
    _ensure_truth(rng, T, normal, groups)
    rows: dict[str, list] = {"train": [], "development": [], "test": []}
    for u, (si, st, views) in enumerate(studies):
        sid, sex, aseed = subjects[si]
        findings, _ = _findings(rng, [(lab, 1.0) for j, lab in enumerate(labels) if T[u, j]], table)
        values = {lab: int(T[u, j]) for j, lab in enumerate(labels)} | {"No Finding": int(normal[u])}
        for view in views:
            did = _mimic_dicom_id(rng)
            rel = f"files/p{str(sid)[:2]}/p{sid}/s{st}/{did}.jpg"
            _save_gray(root / rel, _draw(Case(sex, view, findings, aseed, _seed(rng)), (size, size), site).image,
                       "JPEG")
            rows[groups[u]].append([did, str(sid), str(st), rel] + [str(values[lab]) for lab in CXR_LT_LABELS])
    for name, part in rows.items():
        _write_csv(root / f"{name}.csv", CXR_LT_META + CXR_LT_LABELS, part)
    return root


# ----------------------------------------------------------------------------------------- COVIDx

_COVIDX_SOURCES = ("rsna", "cohen", "ricord", "bimcv", "sirm", "actmed", "fig1")


def write_covidx(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """COVIDx CXR-4: ``{train,val,test}.txt`` ("patient_id filename class data_source", class
    positive/negative) and ``{train,val,test}/<filename>``."""
    root = folder
    site = SITES_CLS["covidx"]
    patients = []  # (patient id, source, sex, anatomy seed, n images)
    count = 0
    while count < n:
        source = _COVIDX_SOURCES[int(rng.integers(len(_COVIDX_SOURCES)))]
        pid = str(int(rng.integers(1, 99999))) if source in ("cohen", "sirm") else _hex(rng, 12)
        if any(p[0] == pid and p[1] == source for p in patients):
            continue
        k = int(min(2, rng.geometric(0.75), n - count))
        patients.append((pid, source, "F" if rng.random() < 0.45 else "M", _seed(rng), k))
        count += k
    split_of, groups = _groups_for([p[4] for p in patients], rng, {"train": 0.7, "val": 0.1, "test": 0.2})
    # class per patient: half of the patients of every split are positive
    positive = np.zeros(len(patients), dtype=bool)
    for s in ("train", "val", "test"):
        idx = rng.permutation(np.flatnonzero(split_of == s))
        positive[idx[: len(idx) // 2]] = True
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    names = set()
    for p, (pid, source, sex, aseed, k) in enumerate(patients):
        split = split_of[p]
        for _ in range(k):
            name = f"{_hex(rng, 16)}.{'png' if rng.random() < 0.6 else 'jpg'}"
            while name in names:
                name = f"{_hex(rng, 16)}.png"
            names.add(name)
            if positive[p]:  # bilateral peripheral ground-glass / consolidation
                findings = (Finding("opacity", 1.0, "B"),) + ((Finding("consolidation", 0.8),)
                                                              if rng.random() < 0.4 else ())
            else:  # negatives: normal or another (unilateral) process
                findings = () if rng.random() < 0.7 else (Finding("opacity", 0.8, "R" if rng.random() < 0.5 else "L"),)
            img = _draw(Case(sex, "AP" if rng.random() < 0.5 else "PA", findings, aseed, _seed(rng)), (size, size),
                        site).image
            _save_gray(root / split / name, img, "PNG" if name.endswith(".png") else "JPEG")
            lines[split].append(f"{pid} {name} {'positive' if positive[p] else 'negative'} {source}")
    for split, part in lines.items():
        (root / f"{split}.txt").write_text("\n".join(part) + "\n")
    return root


# ----------------------------------------------------------------------------------------- pediatric


def write_pediatric_pneumonia(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """Kaggle "chest_xray": ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` with the provider's
    file names (``IM-0001-0001.jpeg``, ``NORMAL2-IM-0001-0001.jpeg``, ``person1_bacteria_1.jpeg``,
    ``person1_virus_2.jpeg``)."""
    root = folder / "chest_xray"
    site = SITES_CLS["pediatric_pneumonia"]
    sizes, count = [], 0
    while count < n:
        k = int(min(2, rng.geometric(0.7), n - count))
        sizes.append(k)
        count += k
    n_val = max(3, int(round(0.02 * len(sizes))))
    split_of = _split_by_quota(rng, len(sizes), {"train": 1.0 - 0.2 - n_val / len(sizes), "test": 0.2,
                                                 "val": n_val / len(sizes)})
    kinds = np.empty(len(sizes), dtype=object)
    for s in ("train", "val", "test"):  # every split holds normal, bacterial and viral patients
        idx = rng.permutation(np.flatnonzero(split_of == s))
        for i, p in enumerate(idx):
            kinds[p] = ("normal", "bacteria", "virus")[i] if i < 3 else \
                ("normal", "bacteria", "virus")[int(rng.choice(3, p=[0.3, 0.45, 0.25]))]
    next_person, next_im, next_im2, image_no = 1, 1, 1, 0
    for p, k in enumerate(sizes):
        kind = kinds[p]
        if kind != "normal":
            name, next_person = f"person{next_person}", next_person + 1
        elif rng.random() < 0.7:
            name, next_im = f"IM-{next_im:04d}", next_im + 1
        else:
            name, next_im2 = f"NORMAL2-IM-{next_im2:04d}", next_im2 + 1
        sex, aseed = ("F" if rng.random() < 0.5 else "M"), _seed(rng)
        for j in range(1, k + 1):
            image_no += 1
            if kind == "normal":
                fname, cls, findings = f"{name}-{j:04d}.jpeg", "NORMAL", ()
            else:
                fname, cls = f"{name}_{kind}_{image_no}.jpeg", "PNEUMONIA"
                side = "R" if rng.random() < 0.5 else "L"
                findings = ((Finding("consolidation", 1.0, side),) if kind == "bacteria"
                            else (Finding("opacity", 0.8, "B"),))
            img = _draw(Case(sex, "AP", findings, aseed, _seed(rng)), (size, size), site).image
            _save_gray(root / split_of[p] / cls / fname, img, "JPEG")
    return root


# ----------------------------------------------------------------------------------------- ChestDR


def write_chestdr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """MedFMC ChestDR: ``MedFMC/chest/images/<id>.png``, ``trainval.txt`` and ``test_WithLabel.txt``
    ("<id>.png v1,...,v19")."""
    root = folder / "MedFMC" / "chest"
    table, site = _CONCEPTS["chestdr"], SITES_CLS["chestdr"]
    n_test = max(2, int(round(0.2 * n)))
    part = rng.permutation(np.array(["trainval"] * (n - n_test) + ["test"] * n_test, dtype=object))
    ids: list[str] = []
    while len(ids) < n:
        image_id = ("5" + _hex(rng, 14)).upper()
        if image_id not in ids:
            ids.append(image_id)
    # the val images the adapter carves by default (seed 0), so every label has positives there too
    groups = carve_validation(ids, part == "trainval", 0, 0.1)
    prev = [0.25, 0.12, 0.15, 0.12, 0.06, 0.06, 0.15, 0.10, 0.06, 0.08, 0.05, 0.04, 0.05, 0.05, 0.08, 0.04, 0.06,
            0.04, 0.05]
    T, normal = _sample_truth(rng, n, prev, 0.3)
    _ensure_truth(rng, T, normal, groups)
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    for u, image_id in enumerate(ids):
        sex, _ = _sex_age(rng, 0.45)
        findings, _ = _findings(rng, [(lab, 1.0) for j, lab in enumerate(CHESTDR_LABELS) if T[u, j]], table)
        _save_gray(root / "images" / f"{image_id}.png",
                   _draw(Case(sex, "PA", findings, _seed(rng), _seed(rng)), (size, size), site).image, "PNG")
        lines[part[u]].append(f"{image_id}.png " + ",".join(str(int(x)) for x in T[u]))
    (root / "trainval.txt").write_text("\n".join(lines["trainval"]) + "\n")
    (root / "test_WithLabel.txt").write_text("\n".join(lines["test"]) + "\n")
    return root


# ----------------------------------------------------------------------------------------- generic


def write_generic_csv(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``my_csv_dataset/labels.csv`` (path,patient,split,sex,age,view,Cardiomegaly,Effusion,Nodule,Pneumothorax;
    values 1/0/-1/blank) and ``my_csv_dataset/images/<patient>_<k>.png``."""
    root = folder / "my_csv_dataset"
    table, site = _CONCEPTS["csv"], SITES_CLS["csv"]
    patients, count = [], 0
    while count < n:
        k = int(min(3, rng.geometric(0.6), n - count))
        sex, age = _sex_age(rng)
        patients.append((f"P{len(patients) + 1:04d}", sex, age, _seed(rng), k))
        count += k
    split_of, groups = _groups_for([p[4] for p in patients], rng, {"train": 0.7, "val": 0.1, "test": 0.2})
    T, normal = _sample_truth(rng, count, [0.2, 0.25, 0.15, 0.1], 0.3)
    _ensure_truth(rng, T, normal, groups)
    rows, u = [], 0
    for p, (pid, sex, age, aseed, k) in enumerate(patients):
        for j in range(1, k + 1):
            view = "PA" if rng.random() < 0.6 else "AP"
            findings, _ = _findings(rng, [(lab, 1.0) for c, lab in enumerate(GENERIC_CSV_LABELS) if T[u, c]], table)
            rel = f"images/{pid}_{j}.png"
            _save_gray(root / rel, _draw(Case(sex, view, findings, aseed, _seed(rng)), (size, size), site).image,
                       "PNG")
            r = rng.random(len(GENERIC_CSV_LABELS))
            recorded = ["1" if t else ("" if x < 0.05 else "0") for t, x in zip(T[u], r)]
            recorded = ["-1" if t and x > 0.9 else v for v, t, x in zip(recorded, T[u], r)]
            rows.append([rel, pid, str(split_of[p]), sex, str(age + (j - 1)), view] + recorded)
            u += 1
    _write_csv(root / "labels.csv", ("path", "patient", "split", "sex", "age", "view") + GENERIC_CSV_LABELS, rows)
    return root


def write_generic_folder(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``my_folder_dataset/{train,val,test}/<class>/<patient>_<k>.png`` with classes Cardiomegaly, Effusion,
    Normal, Pneumothorax (read with ``patient_regex: "^(P\\d+)_"``)."""
    root = folder / "my_folder_dataset"
    site = SITES_CLS["folder"]
    concept = {"Cardiomegaly": "cardiomegaly", "Effusion": "effusion", "Pneumothorax": "pneumothorax"}
    patients, count = [], 0
    while count < n:
        k = int(min(2, rng.geometric(0.7), n - count))
        patients.append((f"P{len(patients) + 1:04d}", "F" if rng.random() < 0.5 else "M", _seed(rng), k))
        count += k
    split_of, _ = _groups_for([p[3] for p in patients], rng, {"train": 0.7, "val": 0.1, "test": 0.2})
    cls_of = np.empty(len(patients), dtype=object)
    for s in ("train", "val", "test"):  # every class in every split (round robin over a shuffled order)
        idx = rng.permutation(np.flatnonzero(split_of == s))
        for i, p in enumerate(idx):
            cls_of[p] = GENERIC_FOLDER_CLASSES[i % len(GENERIC_FOLDER_CLASSES)]
    for p, (pid, sex, aseed, k) in enumerate(patients):
        cls = cls_of[p]
        findings = () if cls == "Normal" else (Finding(concept[cls], 1.0),)
        for j in range(1, k + 1):
            img = _draw(Case(sex, "PA", findings, aseed, _seed(rng)), (size, size), site).image
            _save_gray(root / split_of[p] / cls / f"{pid}_{j}.png", img, "PNG")
    return root


#: adapter name -> writer(folder, rng, n, size) -> dataset root
WRITERS: dict = {
    "cxr_lt": write_cxr_lt,
    "covidx": write_covidx,
    "pediatric_pneumonia": write_pediatric_pneumonia,
    "chestdr": write_chestdr,
    "csv": write_generic_csv,
    "folder": write_generic_folder,
}
