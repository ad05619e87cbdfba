"""Synthetic MIMIC-CXR-JPG 2.0.0 (read by :mod:`arkx.data.adapters.mimic_cxr`): the metadata, split,
CheXpert and NegBio label files (gzipped CSV), images under ``files/pXX/pNNNNNNNN/sNNNNNNNN/``, and
MIMIC-IV ``hosp/patients.csv.gz`` (sex) next to it. The labels are CheXpert's, with the same concepts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..anatomy import Case, Site, draw_case
from ..files import fmt_label, save_gray, write_csv
from ..ids import mimic_dicom_id
from ..sampling import (
    draw_seed,
    ensure_observed,
    ensure_truth,
    findings_for,
    observe_labeler,
    sample_truth,
    sex_age,
    split_by_quota,
)
from . import chexpert

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

#: the CheXpert labeler's labels: the same concepts and prevalences as CheXpert
CONCEPTS_BY_LABEL: dict[str, tuple[str, ...]] = dict(chexpert.CONCEPTS_BY_LABEL)
PREVALENCE_BY_LABEL: dict[str, float] = dict(chexpert.PREVALENCE_BY_LABEL)
NORMAL_FRACTION = 0.25  # studies without any finding
#: acquisition look of this dataset
SITE = Site(
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
)

_MIMIC_PATTERNS = (
    (("PA", "LATERAL"), 0.45), (("AP",), 0.35), (("PA",), 0.05), (("AP", "LATERAL"), 0.07),
    (("PA", "LATERAL", "LATERAL"), 0.03), (("AP", "AP"), 0.05),
)  # fmt: skip
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}


def write_mimic_cxr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``mimic-cxr-jpg/2.0.0/{metadata,split,chexpert,negbio}.csv.gz`` and
    ``files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``,
    and MIMIC-IV ``mimic-iv/hosp/patients.csv.gz`` (sex) next to it."""
    root = folder / "mimic-cxr-jpg" / "2.0.0"
    table, site = CONCEPTS_BY_LABEL, SITE
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
        sex, age = sex_age(rng, 0.47, 18, 91)
        anchor_year = int(rng.integers(2110, 2190))
        subjects.append(dict(subject_id=sid, sex=sex, anchor_age=age, anchor_year=anchor_year, aseed=draw_seed(rng)))
        for _ in range(int(min(4, rng.geometric(0.5)))):
            st = int(rng.integers(50_000_000, 60_000_000))
            while st in used_study:
                st = int(rng.integers(50_000_000, 60_000_000))
            used_study.add(st)
            views = _MIMIC_PATTERNS[int(rng.choice(len(_MIMIC_PATTERNS), p=pat_p / pat_p.sum()))][0]
            views = tuple("LL" if v == "LATERAL" and rng.random() < 0.2 else v for v in views)
            studies.append((len(subjects) - 1, st, views))
            count += len(views)
    split_of_subject = split_by_quota(rng, len(subjects), {"train": 0.75, "validate": 0.10, "test": 0.15})
    groups = np.array([split_of_subject[s] for s, _, _ in studies], dtype=object)
    prev = [PREVALENCE_BY_LABEL[lab] for lab in labels]
    T, normal = sample_truth(rng, len(studies), prev, NORMAL_FRACTION)
    ensure_truth(rng, T, normal, groups)
    obs = observe_labeler(rng, T, normal, p_pos=(0.8, 0.12))
    ensure_observed(rng, obs, T, groups)
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
        findings, _ = findings_for(rng, pos, table)
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
            did = mimic_dicom_id(rng)
            rel = Path("files") / f"p{str(sid)[:2]}" / f"p{sid}" / f"s{st}" / f"{did}.jpg"
            case = Case(
                subj["sex"], "LATERAL" if view in ("LATERAL", "LL") else view, findings, subj["aseed"], draw_seed(rng)
            )
            save_gray(root / rel, draw_case(case, (size, size), site).image, "JPEG")
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
            + [fmt_label(nf if lab == "No Finding" else obs[u, by_name[lab]]) for lab in MIMIC_LABELS]
        )
        negbio_rows.append(
            [str(sid), str(st)]
            + [fmt_label(nf if lab == "No Finding" else N[u, by_name[lab]]) for lab in MIMIC_LABELS]
        )
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_METADATA_COLUMNS, meta, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT_COLUMNS, split_rows, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", MIMIC_LABEL_COLUMNS, chex_rows, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", MIMIC_LABEL_COLUMNS, negbio_rows, gz=True)
    # MIMIC-IV hosp/patients: every CXR subject plus some hospital patients without a chest X-ray
    pats = [(s["subject_id"], s["sex"], s["anchor_age"], s["anchor_year"]) for s in subjects]
    for _ in range(max(1, len(subjects) // 10)):
        sid = int(rng.integers(10_000_000, 20_000_000))
        if sid not in used_subj:
            used_subj.add(sid)
            sex, age = sex_age(rng, 0.5, 18, 91)
            pats.append((sid, sex, age, int(rng.integers(2110, 2190))))
    groups_iv = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019")
    prow = []
    for sid, sex, age, year in sorted(pats):
        dod = ""
        if rng.random() < 0.1:
            dod = f"{year + int(rng.integers(0, 4))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
        prow.append([str(sid), sex, str(age), str(year), groups_iv[int(rng.integers(4))], dod])
    write_csv(folder / "mimic-iv" / "hosp" / "patients.csv.gz", MIMIC_PATIENTS_COLUMNS, prow, gz=True)
    return root
