"""Writers of the six provider layouts, with the label tables and the label -> finding-concept table.

Each ``write_<name>(folder, rng, n, size)`` fills ``folder`` the way the provider ships the data and
returns the dataset root an adapter is pointed at. Labels are drawn first (latent truth per
study/image), then what the provider *recorded* is derived from the truth (uncertain, blank, one
reader missing a finding ...), and the image is drawn from the truth: a blank CheXpert cell is still
drawn if its latent truth is positive, an uncertain (-1) positive is drawn at half strength.

Every label of every dataset has at least ``MIN_POSITIVES`` positive images in each official split
(when there are enough images for it, which holds for ``n >= 200``), and "No finding" style labels
likewise.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from .anatomy import Box, Case, Finding, Site, draw_case, to_uint8

MIN_POSITIVES = 3  # per label and per evaluated split, generation target (tests require >= 2)

# ----------------------------------------------------------------------------------------- labels

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip
CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA") + CHEXPERT_LABELS

#: MIMIC-CXR-JPG label files list the same 14 labels in alphabetical order
MIMIC_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # fmt: skip
MIMIC_LABEL_COLUMNS = ("subject_id", "study_id") + MIMIC_LABELS
MIMIC_METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
MIMIC_SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
MIMIC_PATIENTS_COLUMNS = ("subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod")

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

RSNA_CLASSES = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
RSNA_LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
RSNA_CLASS_COLUMNS = ("patientId", "class")

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

#: dataset label -> finding concept(s) drawn for a positive (a tuple: one of them, chosen per case).
#: "No finding" labels draw nothing. The same concept is drawn by the same code in every dataset.
LABEL_CONCEPTS: dict[str, dict[str, tuple[str, ...]]] = {
    "chexpert": {
        "Enlarged Cardiomediastinum": ("wide_mediastinum",),
        "Cardiomegaly": ("cardiomegaly",),
        "Lung Opacity": ("opacity",),
        "Lung Lesion": ("nodule", "mass"),
        "Edema": ("edema",),
        "Consolidation": ("consolidation",),
        "Pneumonia": ("opacity", "consolidation"),
        "Atelectasis": ("atelectasis",),
        "Pneumothorax": ("pneumothorax",),
        "Pleural Effusion": ("effusion",),
        "Pleural Other": ("pleural_thickening",),
        "Fracture": ("rib_fracture", "clavicle_fracture"),
        "Support Devices": ("devices",),
    },
    "nih14": {
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
    },
    "rsna": {"Lung Opacity": ("opacity",)},
    "vindr_cxr": {
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
    },
    "shenzhen": {"Tuberculosis": ("tuberculosis",)},
}
LABEL_CONCEPTS["mimic_cxr"] = dict(LABEL_CONCEPTS["chexpert"])

#: latent prevalence of each label (fraction of studies/images), all within 5%..40%
PREVALENCE: dict[str, dict[str, float]] = {
    "chexpert": {
        "Enlarged Cardiomediastinum": 0.10, "Cardiomegaly": 0.16, "Lung Opacity": 0.30, "Lung Lesion": 0.08,
        "Edema": 0.18, "Consolidation": 0.10, "Pneumonia": 0.08, "Atelectasis": 0.18, "Pneumothorax": 0.10,
        "Pleural Effusion": 0.28, "Pleural Other": 0.06, "Fracture": 0.07, "Support Devices": 0.30,
    },
    "nih14": {
        "Atelectasis": 0.12, "Cardiomegaly": 0.07, "Effusion": 0.14, "Infiltration": 0.18, "Mass": 0.07,
        "Nodule": 0.08, "Pneumonia": 0.06, "Pneumothorax": 0.07, "Consolidation": 0.06, "Edema": 0.06,
        "Emphysema": 0.06, "Fibrosis": 0.06, "Pleural_Thickening": 0.06, "Hernia": 0.05,
    },
    "vindr_cxr": {label: 0.07 for label in VINDR_LABELS if label != "No finding"}
    | {"Aortic enlargement": 0.14, "Cardiomegaly": 0.12, "Pleural thickening": 0.10, "Pulmonary fibrosis": 0.10,
       "Lung Opacity": 0.10, "Other lesion": 0.08, "Other diseases": 0.10, "Tuberculosis": 0.06},
}  # fmt: skip
PREVALENCE["mimic_cxr"] = dict(PREVALENCE["chexpert"])
NORMAL_FRACTION = {"chexpert": 0.22, "nih14": 0.35, "vindr_cxr": 0.35, "mimic_cxr": 0.25}

#: acquisition look of each dataset (constant within a dataset, different between datasets)
SITES: dict[str, Site] = {
    "chexpert": Site(
        "chexpert", gamma=1.15, contrast=0.95, offset=0.02, noise=0.02, blur=0.7, marker="tr", marker_seed=1
    ),
    "nih14": Site(
        "nih14",
        gamma=0.85,
        contrast=1.0,
        offset=0.0,
        noise=0.012,
        blur=0.9,
        border_top=0.03,
        marker="tl",
        marker_seed=2,
    ),
    "rsna": Site("rsna", gamma=1.0, contrast=0.9, offset=0.06, noise=0.03, blur=0.5, marker="tr", marker_seed=3),
    "vindr_cxr": Site(
        "vindr_cxr",
        gamma=1.3,
        contrast=1.0,
        offset=0.0,
        noise=0.008,
        blur=0.3,
        border=0.05,
        border_value=0.9,
        marker=None,
    ),
    "shenzhen": Site(
        "shenzhen",
        gamma=0.8,
        contrast=1.05,
        offset=-0.02,
        noise=0.02,
        blur=1.0,
        border=0.08,
        marker="bl",
        marker_seed=5,
    ),
    "mimic_cxr": Site(
        "mimic_cxr",
        gamma=1.05,
        contrast=1.0,
        offset=0.03,
        noise=0.025,
        blur=0.6,
        border_top=0.02,
        border_value=0.95,
        marker="tl",
        marker_seed=6,
    ),
}

# ----------------------------------------------------------------------------------------- sampling


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**62))


def _sample_truth(rng, n: int, prev: list[float], normal_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Latent truth ``T[n, L]`` and the normal flag (no finding at all) of ``n`` units."""
    p = np.asarray(prev, dtype=float)
    cond = np.minimum(p / (1.0 - normal_frac), 0.6)
    normal = rng.random(n) < normal_frac
    T = rng.random((n, len(p))) < cond
    T[normal] = False
    for i in np.flatnonzero(~normal & ~T.any(axis=1)):
        T[i, rng.choice(len(p), p=cond / cond.sum())] = True
    return T, normal


def _ensure_truth(rng, T: np.ndarray, normal: np.ndarray, groups: np.ndarray, k: int = MIN_POSITIVES) -> None:
    """In place: each group gets >= k normal units and >= k positive units of every label (best effort)."""
    for gname in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == gname)
        need = k - int(normal[idx].sum())
        if need > 0:
            cands = rng.permutation(idx[~normal[idx]])
            # prefer units with a single finding, so label counts suffer least
            cands = cands[np.argsort(T[cands].sum(axis=1), kind="stable")]
            for u in cands[:need]:
                normal[u] = True
                T[u] = False
        for j in range(T.shape[1]):
            need = k - int(T[idx, j].sum())
            if need > 0:
                cands = rng.permutation(idx[~normal[idx] & ~T[idx, j]])
                T[cands[:need], j] = True


def _ensure_observed(rng, obs: np.ndarray, T: np.ndarray, groups: np.ndarray, k: int = MIN_POSITIVES) -> None:
    """In place: each group has >= k units recorded positive (1.0) for every label whose truth allows it."""
    for gname in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == gname)
        for j in range(obs.shape[1]):
            need = k - int((obs[idx, j] == 1.0).sum())
            if need > 0:
                cands = rng.permutation(idx[T[idx, j] & (obs[idx, j] != 1.0)])
                obs[cands[:need], j] = 1.0


def _observe_labeler(rng, T: np.ndarray, normal: np.ndarray, p_pos=(0.75, 0.15), p_neg=(0.25, 0.05)) -> np.ndarray:
    """What a report labeler records: positives 1.0 / -1.0 / blank, negatives 0.0 / -1.0 / blank."""
    r = rng.random(T.shape)
    pos = np.where(r < p_pos[0], 1.0, np.where(r < p_pos[0] + p_pos[1], -1.0, np.nan))
    neg = np.where(r < p_neg[0], 0.0, np.where(r < p_neg[0] + p_neg[1], -1.0, np.nan))
    neg[normal] = np.where(r[normal] < p_neg[0], 0.0, np.nan)
    return np.where(T, pos, neg)


def _split_by_quota(rng, n: int, fractions: dict[str, float]) -> np.ndarray:
    """Assign ``n`` patients to splits with (rounded) quotas, shuffled."""
    names = list(fractions)
    counts = [int(round(fractions[s] * n)) for s in names[1:]]
    counts = [max(1, c) if n >= 2 * len(names) else c for c in counts]
    first = n - sum(counts)
    labels = np.array(sum(([s] * c for s, c in zip(names, [first] + counts)), []), dtype=object)
    return rng.permutation(labels)


def _findings(rng, positives: list[tuple[str, float]], table: dict[str, tuple[str, ...]]):
    """Findings for positive labels ``(label, strength)``; returns the findings and the label of each."""
    out, owners = [], []
    for label, strength in positives:
        options = table[label]
        concept = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]
        out.append(Finding(concept, float(strength)))
        owners.append(label)
    return tuple(out), owners


def _sex_age(rng, p_female=0.45, lo=18, hi=90) -> tuple[str, int]:
    return ("F" if rng.random() < p_female else "M"), int(np.clip(rng.normal(58, 17), lo, hi))


# ----------------------------------------------------------------------------------------- file IO


def _fmt_label(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.1f}"


def _fmt_num(x: float) -> str:
    return repr(float(x))


def _csv_bytes(header, rows, raw_header: str | None = None) -> bytes:
    buf = io.StringIO()
    if raw_header is not None:
        buf.write(raw_header + "\n")
    w = csv.writer(buf, lineterminator="\n")
    if raw_header is None:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _write_csv(path: Path, header, rows, raw_header: str | None = None, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _csv_bytes(header, rows, raw_header)
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0) if gz else data)


def _save_gray(path: Path, img: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(to_uint8(img), mode="L")
    if fmt == "JPEG":
        im.save(path, format="JPEG", quality=92)
    else:
        im.save(path, format="PNG")


def _uid(*parts) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _write_dicom(path: Path, pixels: np.ndarray, *, sop_class: str, uid_key: tuple, photometric: str,
                 bits_stored: int, tags: dict) -> None:  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    sop_uid = _uid("sop", *uid_key)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = _uid("study", *uid_key)
    ds.SeriesInstanceUID = _uid("series", *uid_key)
    for key, value in tags.items():
        if key == "PatientAge":  # providers write ages that are not valid AS strings (RSNA: "51")
            ds.add(DataElement(0x00101010, "AS", value, validation_mode=config.IGNORE))
        else:
            setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    data = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.add_new(0x7FE00010, "OB" if pixels.dtype == np.uint8 else "OW", data)
    ds.save_as(path, enforce_file_format=True)


def _draw(case: Case, shape, site: Site):
    return draw_case(case, shape, site)


def _boxes_by_label(drawn, owners: list[str]) -> dict[str, list[Box]]:
    out: dict[str, list[Box]] = {}
    for i, label in enumerate(owners):
        for b in drawn.boxes.get(i, []):
            out.setdefault(label, []).append(b)
    return out


# ----------------------------------------------------------------------------------------- CheXpert


def write_chexpert(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``CheXpert-v1.0-small/{train,valid}.csv`` and
    ``{train,valid}/patientNNNNN/studyK/viewJ_<frontal|lateral>.jpg``."""
    name = "CheXpert-v1.0-small"
    root = folder / name
    labels = CHEXPERT_LABELS[1:]
    table, site = LABEL_CONCEPTS["chexpert"], SITES["chexpert"]
    n_valid = max(2, int(round(0.2 * n)))
    studies = []  # (split, patient no, study no, sex, age, anatomy seed, [(view no, kind, ap/pa)])
    pid = 0
    for split, target, p_lat in (("train", n - n_valid, 0.3), ("valid", n_valid, 0.15)):
        count = 0
        while count < target:
            pid += 1
            sex, age = _sex_age(rng, 0.42)
            sex_word = {"M": "Male", "F": "Female"}[sex] if rng.random() > 0.01 else "Unknown"
            aseed = _seed(rng)
            k = 1 if split == "valid" else int(min(4, rng.geometric(0.55)))
            for s in range(1, k + 1):
                views = [(1, "frontal", "AP" if rng.random() < 0.72 else "PA")]
                if rng.random() < p_lat:
                    views.append((2, "lateral", ""))
                studies.append((split, pid, s, sex_word, min(90, age + s - 1), aseed, views))
                count += len(views)
    groups = np.array([s[0] for s in studies], dtype=object)
    prev = [PREVALENCE["chexpert"][lab] for lab in labels]
    T, normal = _sample_truth(rng, len(studies), prev, NORMAL_FRACTION["chexpert"])
    _ensure_truth(rng, T, normal, groups)
    obs = _observe_labeler(rng, T, normal)
    valid = groups == "valid"
    obs[valid] = T[valid].astype(float)
    _ensure_observed(rng, obs, T, groups)
    rows = {"train": [], "valid": []}
    for u, (split, pno, sno, sex_word, age, aseed, views) in enumerate(studies):
        pos = [(lab, 0.5 if obs[u, j] == -1.0 else 1.0) for j, lab in enumerate(labels) if T[u, j]]
        findings, _ = _findings(rng, pos, table)
        sex = {"Male": "M", "Female": "F"}.get(sex_word, "O")
        nf = 1.0 if normal[u] else (0.0 if split == "valid" else float("nan"))
        for vno, kind, appa in views:
            rel = f"{split}/patient{pno:05d}/study{sno}/view{vno}_{kind}.jpg"
            case = Case(sex, "LATERAL" if kind == "lateral" else appa, findings, aseed, _seed(rng))
            _save_gray(root / rel, _draw(case, (size, size), site).image, "JPEG")
            rows[split].append(
                [f"{name}/{rel}", sex_word, str(age), kind.capitalize(), appa, _fmt_label(nf)]
                + [_fmt_label(obs[u, j]) for j in range(len(labels))]
            )
    _write_csv(root / "train.csv", CHEXPERT_COLUMNS, rows["train"])
    _write_csv(root / "valid.csv", CHEXPERT_COLUMNS, rows["valid"])
    return root


# ----------------------------------------------------------------------------------------- NIH


def write_nih14(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``Data_Entry_2017_v2020.csv``, ``BBox_List_2017.csv``, ``train_val_list.txt``, ``test_list.txt`` and
    ``images_NNN/images/*.png``."""
    root = folder
    table, site = LABEL_CONCEPTS["nih14"], SITES["nih14"]
    images = []  # (patient, follow-up, age, sex, view, anatomy seed)
    pid = 0
    while len(images) < n:
        pid += 1
        sex, age = _sex_age(rng, 0.44, 1, 94)
        aseed = _seed(rng)
        k = int(min(5, rng.geometric(0.5), n - len(images)))
        for fu in range(k):
            images.append((pid, fu, min(95, age + fu // 2), sex, "PA" if rng.random() < 0.6 else "AP", aseed))
    split_of_patient = dict(zip(range(1, pid + 1), _split_by_quota(rng, pid, {"train_val": 0.77, "test": 0.23})))
    groups = np.array([split_of_patient[im[0]] for im in images], dtype=object)
    T, normal = _sample_truth(
        rng, len(images), [PREVALENCE["nih14"][lab] for lab in NIH14_LABELS], NORMAL_FRACTION["nih14"]
    )
    _ensure_truth(rng, T, normal, groups)
    entries, bbox_rows = [], []
    sizes = [(2500, 2048, 0.168), (2048, 2500, 0.168), (2992, 2991, 0.143), (3056, 2544, 0.139), (2021, 2021, 0.194311)]
    names = [f"{p:08d}_{fu:03d}.png" for p, fu, *_ in images]
    chunk = max(1, math.ceil(len(images) / 5))
    bounds = [max(1, chunk // 2)]
    while bounds[-1] < len(images):
        bounds.append(bounds[-1] + chunk)
    for u, (p, fu, age, sex, view, aseed) in enumerate(images):
        pos = [(lab, 1.0) for j, lab in enumerate(NIH14_LABELS) if T[u, j]]
        findings, owners = _findings(rng, pos, table)
        drawn = _draw(Case(sex, view, findings, aseed, _seed(rng)), (size, size), site)
        folder_no = 1 + sum(u >= b for b in bounds)
        _save_gray(root / f"images_{folder_no:03d}" / "images" / names[u], drawn.image, "PNG")
        w, h, sp = sizes[int(rng.integers(len(sizes)))]
        text = "|".join(sorted(lab for lab, _ in pos)) or "No Finding"
        entries.append(
            [names[u], text, str(fu), str(p), str(age), sex, view, str(w), str(h), _fmt_num(sp), _fmt_num(sp)]
        )
        if groups[u] == "test":
            for label, boxes in _boxes_by_label(drawn, owners).items():
                if label in NIH_BBOX_LABELS:
                    x0, y0, x1, y1 = boxes[0]
                    bbox_rows.append(
                        [
                            names[u],
                            NIH_BBOX_LABELS[label],
                            _fmt_num(x0),
                            _fmt_num(y0),
                            _fmt_num(x1 - x0),
                            _fmt_num(y1 - y0),
                        ]
                    )
    _write_csv(root / "Data_Entry_2017_v2020.csv", None, entries, raw_header=NIH_HEADER)
    _write_csv(root / "BBox_List_2017.csv", None, bbox_rows, raw_header=NIH_BBOX_HEADER)
    (root / "train_val_list.txt").write_text("".join(f"{nm}\n" for nm, g in zip(names, groups) if g == "train_val"))
    (root / "test_list.txt").write_text("".join(f"{nm}\n" for nm, g in zip(names, groups) if g == "test"))
    return root


# ----------------------------------------------------------------------------------------- RSNA


def _uuid_like(rng) -> str:
    h = "".join(f"{int(x):x}" for x in rng.integers(0, 16, 32))
    variant = "89ab"[int(rng.integers(4))]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


_RSNA_NOT_NORMAL = ("effusion", "nodule", "mass", "atelectasis", "cardiomegaly", "fibrosis", "pleural_thickening",
                    "devices", "pneumothorax", "emphysema")  # fmt: skip


def _rsna_case(rng, cls: str):
    if cls == "Lung Opacity":
        side = ("R", "L", "B")[int(rng.choice(3, p=[0.3, 0.25, 0.45]))]
        findings = [Finding("opacity", 1.0, side)]
        if rng.random() < 0.25:
            findings.append(Finding(_RSNA_NOT_NORMAL[int(rng.integers(len(_RSNA_NOT_NORMAL)))]))
        return tuple(findings)
    if cls == "No Lung Opacity / Not Normal":
        k = 1 if rng.random() < 0.7 else 2
        return tuple(Finding(c) for c in rng.permutation(_RSNA_NOT_NORMAL)[:k])
    return ()


def _rsna_dicom(path: Path, img, pid: str, sex: str, age: int, view: str, idx: int) -> None:
    tags = dict(
        Modality="CR", ConversionType="WSD", BodyPartExamined="CHEST", PatientName=pid, PatientID=pid,
        PatientSex=sex, PatientAge=str(age), PatientBirthDate="", PatientOrientation="", ViewPosition=view,
        SeriesDescription=f"view: {view}", StudyDescription="", StudyDate="19010101", StudyTime="000000.00",
        AccessionNumber="", ReferringPhysicianName="", StudyID="", SeriesNumber=1, InstanceNumber=1,
        PixelSpacing=[0.168, 0.168] if idx % 2 else [0.143, 0.143], LossyImageCompression="01",
    )  # fmt: skip
    _write_dicom(path, to_uint8(img), sop_class="1.2.840.10008.5.1.4.1.1.7", uid_key=("rsna", pid),
                 photometric="MONOCHROME2", bits_stored=8, tags=tags)  # fmt: skip


def write_rsna(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``stage_2_train_labels.csv``, ``stage_2_detailed_class_info.csv`` and
    ``stage_2_{train,test}_images/<patientId>.dcm``."""
    root, site = folder, SITES["rsna"]
    classes = rng.choice(3, size=n, p=[0.32, 0.38, 0.30])
    for c in range(3):  # every class present
        need = MIN_POSITIVES - int((classes == c).sum())
        if need > 0:
            donors = rng.permutation(np.flatnonzero(classes == np.bincount(classes, minlength=3).argmax()))
            classes[donors[:need]] = c
    patients = []
    for i in range(n):
        pid = _uuid_like(rng)
        sex, age = _sex_age(rng, 0.43, 1, 92)
        cls = RSNA_CLASSES[int(classes[i])]
        view = "AP" if rng.random() < (0.65 if cls == "Lung Opacity" else 0.4) else "PA"
        aseed = _seed(rng)
        findings = _rsna_case(rng, cls)
        for _ in range(4):
            drawn = _draw(Case(sex, view, findings, aseed, _seed(rng)), (size, size), site)
            boxes = drawn.boxes.get(0, []) if cls == "Lung Opacity" else []
            if cls != "Lung Opacity" or boxes:
                break
        _rsna_dicom(root / "stage_2_train_images" / f"{pid}.dcm", drawn.image, pid, sex, age, view, i)
        patients.append((pid, cls, boxes))
    label_rows, class_rows = [], []
    for pid, cls, boxes in sorted(patients):
        if boxes:
            for x0, y0, x1, y1 in boxes:
                label_rows.append([pid, _fmt_num(x0), _fmt_num(y0), _fmt_num(x1 - x0), _fmt_num(y1 - y0), "1"])
                class_rows.append([pid, cls])
        else:
            label_rows.append([pid, "", "", "", "", "0"])
            class_rows.append([pid, cls])
    _write_csv(root / "stage_2_train_labels.csv", RSNA_LABEL_COLUMNS, label_rows)
    _write_csv(root / "stage_2_detailed_class_info.csv", RSNA_CLASS_COLUMNS, class_rows)
    for i in range(max(2, n // 20)):
        pid = _uuid_like(rng)
        sex, age = _sex_age(rng, 0.43, 1, 92)
        view = "AP" if rng.random() < 0.5 else "PA"
        cls = RSNA_CLASSES[int(rng.integers(3))]
        drawn = _draw(Case(sex, view, _rsna_case(rng, cls), _seed(rng), _seed(rng)), (size, size), site)
        _rsna_dicom(root / "stage_2_test_images" / f"{pid}.dcm", drawn.image, pid, sex, age, view, i)
    return root


# ----------------------------------------------------------------------------------------- VinDr-CXR


def _hex(rng, k: int) -> str:
    return "".join(f"{int(x):x}" for x in rng.integers(0, 16, k))


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
        Modality="DX", PatientSex=sex, PatientAge="" if age is None else f"{age:03d}Y", PatientID=_hex(rng, 16),
        BodyPartExamined="CHEST", ImagerPixelSpacing=[0.1, 0.1], PixelSpacing=[0.1, 0.1],
    )  # fmt: skip
    if rng.random() < 0.5:
        tags.update(RescaleIntercept=0.0, RescaleSlope=1.0, RescaleType="US")
    if rng.random() < 0.6:
        tags.update(WindowCenter=round(top / 2.0, 1), WindowWidth=round(hi - lo, 1))
    _write_dicom(path, raw, sop_class="1.2.840.10008.5.1.4.1.1.1.1", uid_key=("vindr", image_id),
                 photometric="MONOCHROME1" if mono1 else "MONOCHROME2", bits_stored=bits, tags=tags)  # fmt: skip
    return {"bits": bits, "mono1": mono1}


def write_vindr_cxr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """PhysioNet VinDr-CXR 1.0.0: ``annotations/*.csv``, ``train/<image_id>.dicom``, ``test/<image_id>.dicom``."""
    root = folder
    table, site = LABEL_CONCEPTS["vindr_cxr"], SITES["vindr_cxr"]
    labels = VINDR_LABELS[:-1]
    n_test = min(n - 1, max(2, int(round(0.2 * n))))
    groups = np.array(["train"] * (n - n_test) + ["test"] * n_test, dtype=object)
    T, normal = _sample_truth(rng, n, [PREVALENCE["vindr_cxr"][lab] for lab in labels], NORMAL_FRACTION["vindr_cxr"])
    _ensure_truth(rng, T, normal, groups)
    shapes = [(int(round(1.25 * size)), size), (int(round(1.2 * size)), int(round(1.05 * size))),
              (int(round(1.1 * size)), int(round(1.2 * size)))]  # fmt: skip
    local = set(VINDR_LOCAL_LABELS)
    rads = [f"R{i}" for i in range(1, 18)]
    lab_rows = {"train": [], "test": []}
    ann_rows = {"train": [], "test": []}
    ids = set()
    for u in range(n):
        image_id = _hex(rng, 32)
        while image_id in ids:
            image_id = _hex(rng, 32)
        ids.add(image_id)
        r = rng.random()
        sex = "M" if r < 0.48 else ("F" if r < 0.95 else "O")
        age = None if rng.random() < 0.04 else int(np.clip(rng.normal(50, 16), 15, 90))
        pos = [(lab, 1.0) for j, lab in enumerate(labels) if T[u, j]]
        findings, owners = _findings(rng, pos, table)
        shape = shapes[int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
        drawn = _draw(Case(sex, "PA", findings, _seed(rng), _seed(rng)), shape, site)
        split = groups[u]
        _vindr_dicom(root / split / f"{image_id}.dicom", drawn.image, rng, image_id, sex, age)
        boxes = _boxes_by_label(drawn, owners)
        H, W = shape
        if split == "test":
            lab_rows["test"].append(
                [image_id] + [str(int(T[u, j])) for j in range(len(labels))] + [str(int(normal[u]))]
            )
            if normal[u]:
                ann_rows["test"].append([image_id, "No finding", "", "", "", ""])
            for lab in VINDR_LOCAL_LABELS:
                for x0, y0, x1, y1 in boxes.get(lab, []):
                    ann_rows["test"].append([image_id, lab] + [_fmt_num(x) for x in (x0, y0, x1, y1)])
            continue
        readers = rng.permutation(rads)[:3]
        dissenter = int(rng.integers(3))
        for k, rad in enumerate(readers):
            seen = T[u].copy()
            if k == dissenter:
                seen &= rng.random(len(labels)) >= 0.25  # one reader misses some findings; majority = truth
            nf = int(not seen.any())
            lab_rows["train"].append([image_id, rad] + [str(int(x)) for x in seen] + [str(nf)])
            if nf:
                ann_rows["train"].append([image_id, rad, "No finding", "", "", "", ""])
                continue
            for j, lab in enumerate(labels):
                if not seen[j] or lab not in local:
                    continue
                for x0, y0, x1, y1 in boxes.get(lab, []):
                    jx, jy = rng.integers(-2, 3, 2) * max(1, size // 128)
                    bx0, by0 = float(np.clip(x0 + jx, 0, W - 2)), float(np.clip(y0 + jy, 0, H - 2))
                    bx1, by1 = float(np.clip(x1 + jx, bx0 + 1, W)), float(np.clip(y1 + jy, by0 + 1, H))
                    ann_rows["train"].append([image_id, rad, lab] + [_fmt_num(x) for x in (bx0, by0, bx1, by1)])
    ann = root / "annotations"
    _write_csv(ann / "image_labels_train.csv", VINDR_TRAIN_COLUMNS, lab_rows["train"])
    _write_csv(ann / "image_labels_test.csv", VINDR_TEST_COLUMNS, lab_rows["test"])
    _write_csv(ann / "annotations_train.csv", VINDR_ANNOTATION_TRAIN_COLUMNS, ann_rows["train"])
    _write_csv(ann / "annotations_test.csv", VINDR_ANNOTATION_TEST_COLUMNS, ann_rows["test"])
    return root


# ----------------------------------------------------------------------------------------- Shenzhen

_TB_READINGS = {
    "R": ("right PTB", "PTB in the right upper field", "right upper PTB", "right secondary PTB"),
    "L": ("left PTB", "PTB in the left upper field", "left upper PTB", "left secondary PTB"),
    "B": (
        "bilateral PTB",
        "bilateral secondary PTB",
        "PTB in the bilateral upper fields",
        "bilateral PTB with cavities",
    ),
}
_SIDE_WORD = {"R": "right", "L": "left"}


def write_shenzhen(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``ChinaSet_AllFiles/CXR_png/CHNCXR_NNNN_{0,1}.png`` and ``ClinicalReadings/CHNCXR_NNNN_{0,1}.txt``."""
    root = folder / "ChinaSet_AllFiles"
    site = SITES["shenzhen"]
    n_tb = int(np.clip(round(n * 0.5), min(MIN_POSITIVES, n // 2), n - min(MIN_POSITIVES, n // 2)))
    labels = [0] * (n - n_tb) + [1] * n_tb  # normals are numbered first, as shipped
    for i, tb in enumerate(labels, start=1):
        stem = f"CHNCXR_{i:04d}_{tb}"
        sex, age = _sex_age(rng, 0.32, 8, 85)
        r = rng.random()
        word = ("male" if sex == "M" else "female") if r < 0.8 else ("Male" if sex == "M" else "Female")
        unit = "yrs" if r < 0.9 else ("yr" if r < 0.96 else " yrs")
        findings: tuple[Finding, ...] = ()
        reading = "normal"
        if tb:
            side = ("R", "L", "B")[int(rng.choice(3, p=[0.35, 0.25, 0.4]))]
            reading = _TB_READINGS[side][int(rng.integers(4))]
            findings = (Finding("tuberculosis", 1.0, side),)
            if rng.random() < 0.15:
                eff_side = "R" if rng.random() < 0.5 else "L"
                reading += f", {_SIDE_WORD[eff_side]} pleural effusion"
                findings += (Finding("effusion", 1.0, eff_side),)
        drawn = _draw(Case(sex, "PA", findings, _seed(rng), _seed(rng)), (size, size), site)
        _save_gray(root / "CXR_png" / f"{stem}.png", drawn.image, "PNG")
        sep = "\n\n" if rng.random() < 0.1 else "\n"
        path = root / "ClinicalReadings" / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{word} {age}{unit}{sep}{reading}\n".encode())
    return root


# ----------------------------------------------------------------------------------------- MIMIC

_MIMIC_PATTERNS = (
    (("PA", "LATERAL"), 0.45), (("AP",), 0.35), (("PA",), 0.05), (("AP", "LATERAL"), 0.07),
    (("PA", "LATERAL", "LATERAL"), 0.03), (("AP", "AP"), 0.05),
)  # fmt: skip
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}


def _mimic_dicom_id(rng) -> str:
    h = _hex(rng, 40)
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


def write_mimic_cxr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``mimic-cxr-jpg/2.0.0/{metadata,split,chexpert,negbio}.csv.gz`` and
    ``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``,
    and MIMIC-IV ``mimic-iv/hosp/patients.csv.gz`` (sex) next to it."""
    root = folder / "mimic-cxr-jpg" / "2.0.0"
    table, site = LABEL_CONCEPTS["mimic_cxr"], SITES["mimic_cxr"]
    labels = tuple(lab for lab in MIMIC_LABELS if lab != "No Finding")
    subjects, studies = [], []  # studies: (subject index, study_id, views)
    used_subj, used_study = set(), set()
    count = 0
    pat_p = np.array([p for _, p in _MIMIC_PATTERNS])
    while count < n:
        sid = int(rng.integers(10_000_000, 20_000_000))
        if sid in used_subj:
            continue
        used_subj.add(sid)
        sex, age = _sex_age(rng, 0.47, 18, 91)
        anchor_year = int(rng.integers(2110, 2190))
        subjects.append(dict(subject_id=sid, sex=sex, anchor_age=age, anchor_year=anchor_year, aseed=_seed(rng)))
        for _ in range(int(min(4, rng.geometric(0.5)))):
            st = int(rng.integers(50_000_000, 60_000_000))
            while st in used_study:
                st = int(rng.integers(50_000_000, 60_000_000))
            used_study.add(st)
            views = _MIMIC_PATTERNS[int(rng.choice(len(_MIMIC_PATTERNS), p=pat_p / pat_p.sum()))][0]
            views = tuple("LL" if v == "LATERAL" and rng.random() < 0.2 else v for v in views)
            studies.append((len(subjects) - 1, st, views))
            count += len(views)
    split_of_subject = _split_by_quota(rng, len(subjects), {"train": 0.75, "validate": 0.10, "test": 0.15})
    groups = np.array([split_of_subject[s] for s, _, _ in studies], dtype=object)
    prev = [PREVALENCE["mimic_cxr"][lab] for lab in labels]
    T, normal = _sample_truth(rng, len(studies), prev, NORMAL_FRACTION["mimic_cxr"])
    _ensure_truth(rng, T, normal, groups)
    obs = _observe_labeler(rng, T, normal, p_pos=(0.8, 0.12))
    _ensure_observed(rng, obs, T, groups)
    # NegBio agrees with the CheXpert labeler except on part of the uncertain mentions
    N = obs.copy()
    r = rng.random(obs.shape)
    unc = obs == -1.0
    N[unc & T & (r < 0.5)] = 1.0
    N[unc & ~T & (r < 0.5)] = np.nan
    meta, split_rows, chex_rows, negbio_rows = [], [], [], []
    order = sorted(range(len(studies)), key=lambda k: (subjects[studies[k][0]]["subject_id"], studies[k][1]))
    for u in order:
        si, st, views = studies[u]
        subj = subjects[si]
        sid = subj["subject_id"]
        pos = [(lab, 0.5 if obs[u, j] == -1.0 else 1.0) for j, lab in enumerate(labels) if T[u, j]]
        findings, _ = _findings(rng, pos, table)
        year = subj["anchor_year"] + int(rng.integers(0, 3))
        date = f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        hh, mm, ss, ms = (
            int(rng.integers(0, 24)),
            int(rng.integers(0, 60)),
            int(rng.integers(0, 60)),
            int(rng.integers(0, 1000)),
        )
        time = repr(round(hh * 10000 + mm * 100 + ss + ms / 1000.0, 3))
        portable = views[0] == "AP"
        proc = "CHEST (PORTABLE AP)" if portable else ("CHEST (PA AND LAT)" if len(views) > 1 else "CHEST (PA)")
        for view in views:
            did = _mimic_dicom_id(rng)
            rel = Path("files") / f"p{str(sid)[:2]}" / f"p{sid}" / f"s{st}" / f"{did}.jpg"
            case = Case(
                subj["sex"], "LATERAL" if view in ("LATERAL", "LL") else view, findings, subj["aseed"], _seed(rng)
            )
            _save_gray(root / rel, _draw(case, (size, size), site).image, "JPEG")
            orient = "Recumbent" if portable and rng.random() < 0.6 else ("Erect" if rng.random() < 0.95 else "")
            meta.append(
                [
                    did,
                    str(sid),
                    str(st),
                    proc,
                    view,
                    str(size),
                    str(size),
                    date,
                    time,
                    proc,
                    _VIEW_MEANING[view],
                    orient,
                ]
            )
            split_rows.append([did, str(st), str(sid), groups[u]])
        nf = 1.0 if normal[u] else float("nan")
        by_name = {lab: j for j, lab in enumerate(labels)}
        chex_rows.append(
            [str(sid), str(st)]
            + [_fmt_label(nf if lab == "No Finding" else obs[u, by_name[lab]]) for lab in MIMIC_LABELS]
        )
        negbio_rows.append(
            [str(sid), str(st)]
            + [_fmt_label(nf if lab == "No Finding" else N[u, by_name[lab]]) for lab in MIMIC_LABELS]
        )
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_METADATA_COLUMNS, meta, gz=True)
    _write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT_COLUMNS, split_rows, gz=True)
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_LABEL_COLUMNS, chex_rows, gz=True)
    _write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", MIMIC_LABEL_COLUMNS, negbio_rows, gz=True)
    # MIMIC-IV hosp/patients: every CXR subject plus some hospital patients without a chest X-ray
    pats = [(s["subject_id"], s["sex"], s["anchor_age"], s["anchor_year"]) for s in subjects]
    for _ in range(max(1, len(subjects) // 10)):
        sid = int(rng.integers(10_000_000, 20_000_000))
        if sid not in used_subj:
            used_subj.add(sid)
            sex, age = _sex_age(rng, 0.5, 18, 91)
            pats.append((sid, sex, age, int(rng.integers(2110, 2190))))
    groups_iv = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019")
    prow = []
    for sid, sex, age, year in sorted(pats):
        dod = ""
        if rng.random() < 0.1:
            dod = f"{year + int(rng.integers(0, 4))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
        prow.append([str(sid), sex, str(age), str(year), groups_iv[int(rng.integers(4))], dod])
    _write_csv(folder / "mimic-iv" / "hosp" / "patients.csv.gz", MIMIC_PATIENTS_COLUMNS, prow, gz=True)
    return root


WRITERS = {
    "chexpert": write_chexpert,
    "nih14": write_nih14,
    "rsna": write_rsna,
    "vindr_cxr": write_vindr_cxr,
    "shenzhen": write_shenzhen,
    "mimic_cxr": write_mimic_cxr,
}
