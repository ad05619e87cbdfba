"""The synthetic dataset generator writes the providers' real layouts, deterministically, with learnable findings."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from arkx.synth import SYNTH_DATASETS, synthesize
from arkx.synth.anatomy import CONCEPTS, Case, Finding, draw_case
from arkx.synth.providers import LABEL_CONCEPTS, PREVALENCE
from arkx.synth.providers.chexpert import CHEXPERT_COLUMNS, CHEXPERT_LABELS
from arkx.synth.providers.mimic_cxr import MIMIC_LABELS
from arkx.synth.providers.nih14 import NIH14_LABELS
from arkx.synth.providers.vindr_cxr import VINDR_LABELS, VINDR_LOCAL_LABELS, VINDR_TEST_LABELS

N, SIZE = 200, 128


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    roots = synthesize(out, seed=0, n=N, size=SIZE)
    return out, roots


def _csv(path: Path) -> pd.DataFrame:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)


def _header(path: Path) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return raw.decode().split("\n", 1)[0]


def _labels(frame: pd.DataFrame, columns) -> np.ndarray:
    return frame[list(columns)].replace("", np.nan).astype(float).to_numpy()


def _gray(path: Path) -> np.ndarray:
    """What a correct reader sees: float image, bright = dense, MONOCHROME1 inverted."""
    if path.suffix in (".dcm", ".dicom"):
        ds = pydicom.dcmread(path)
        a = ds.pixel_array.astype(float)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            a = (2 ** int(ds.BitsStored) - 1) - a
        return a / (2 ** int(ds.BitsStored) - 1) * 255.0
    return np.asarray(Image.open(path), dtype=float)


# ------------------------------------------------------------------------------------ structure


def test_roots_and_manifest(synth):
    out, roots = synth
    assert tuple(roots) == SYNTH_DATASETS
    assert roots == {
        "chexpert": out / "chexpert" / "CheXpert-v1.0-small",
        "nih14": out / "nih14",
        "rsna": out / "rsna",
        "vindr_cxr": out / "vindr_cxr",
        "shenzhen": out / "shenzhen" / "ChinaSet_AllFiles",
        "mimic_cxr": out / "mimic_cxr" / "mimic-cxr-jpg" / "2.0.0",
    }
    assert all(r.is_dir() for r in roots.values())
    manifest = json.loads((out / "SYNTH.json").read_text())
    assert (manifest["seed"], manifest["n"], manifest["size"]) == (0, N, SIZE)
    assert {k: out / v for k, v in manifest["roots"].items()} == roots
    assert (out / "mimic_cxr" / "mimic-iv" / "hosp" / "patients.csv.gz").is_file()


def test_chexpert_layout_and_values(synth):
    root = synth[1]["chexpert"]
    expected = ",".join(CHEXPERT_COLUMNS)
    assert expected.startswith("Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,")
    assert expected.endswith(",Pleural Other,Fracture,Support Devices")
    train, valid = _csv(root / "train.csv"), _csv(root / "valid.csv")
    for split, frame in (("train", train), ("valid", valid)):
        assert _header(root / f"{split}.csv") == expected
        assert (
            frame["Path"]
            .str.fullmatch(rf"CheXpert-v1\.0-small/{split}/patient\d{{5}}/study\d+/view\d_(frontal|lateral)\.jpg")
            .all()
        )
        for p in frame["Path"]:
            assert (root.parent / p).is_file()
        assert set(frame["Sex"]) <= {"Male", "Female", "Unknown"}
        assert frame["Age"].str.fullmatch(r"\d+").all()
        lateral = frame["Frontal/Lateral"] == "Lateral"
        assert set(frame["Frontal/Lateral"]) == {"Frontal", "Lateral"}
        assert (frame.loc[lateral, "AP/PA"] == "").all() and frame.loc[~lateral, "AP/PA"].isin(["AP", "PA"]).all()
    tv = set(_labels(train, CHEXPERT_LABELS).ravel().tolist())
    assert {1.0, 0.0, -1.0} <= tv and any(np.isnan(x) for x in tv)
    vv = _labels(valid, CHEXPERT_LABELS)
    assert not np.isnan(vv).any() and set(vv.ravel().tolist()) == {0.0, 1.0}
    assert set(_labels(train, ["No Finding"]).ravel()[~np.isnan(_labels(train, ["No Finding"]).ravel())]) == {1.0}
    # several studies per patient, patients disjoint between train and valid
    pat = lambda f: f["Path"].str.extract(r"/(patient\d+)/")[0]  # noqa: E731
    studies = train["Path"].str.extract(r"/(patient\d+)/(study\d+)/").drop_duplicates()
    assert studies.groupby(0).size().max() >= 2
    assert not set(pat(train)) & set(pat(valid))
    assert len(train) + len(valid) == pytest.approx(N, abs=10)
    with Image.open(root.parent / train["Path"].iloc[0]) as im:
        assert im.format == "JPEG" and im.mode == "L" and im.size == (SIZE, SIZE)


def test_nih14_layout_and_splits(synth):
    root = synth[1]["nih14"]
    assert _header(root / "Data_Entry_2017_v2020.csv") == (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )
    entries = _csv(root / "Data_Entry_2017_v2020.csv")
    assert list(entries.columns) == ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age",
                                     "Patient Gender", "View Position", "OriginalImage[Width", "Height]",
                                     "OriginalImagePixelSpacing[x", "y]"]  # fmt: skip
    assert entries["Image Index"].str.fullmatch(r"\d{8}_\d{3}\.png").all()
    pid = entries["Image Index"].str[:8].astype(int)
    assert (pid == entries["Patient ID"].astype(int)).all()
    assert (entries["Image Index"].str[9:12].astype(int) == entries["Follow-up #"].astype(int)).all()
    assert set(entries["Patient Gender"]) == {"M", "F"} and set(entries["View Position"]) == {"PA", "AP"}
    tokens = entries["Finding Labels"].str.split("|").explode()
    assert set(tokens) == set(NIH14_LABELS) | {"No Finding"}
    assert not entries["Finding Labels"].str.contains(r"No Finding\|").any()
    files = {p.name: p for p in root.glob("images_*/images/*.png")}
    assert set(files) == set(entries["Image Index"])
    assert len({p.parent.parent.name for p in files.values()}) >= 3
    assert all(re.fullmatch(r"images_\d{3}", p.parent.parent.name) for p in files.values())
    train = (root / "train_val_list.txt").read_text().splitlines()
    test = (root / "test_list.txt").read_text().splitlines()
    assert sorted(train + test) == sorted(entries["Image Index"]) and not set(train) & set(test)
    assert not {t[:8] for t in train} & {t[:8] for t in test}
    assert 0.1 < len(test) / len(entries) < 0.35
    assert _header(root / "BBox_List_2017.csv") == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    boxes = pd.read_csv(root / "BBox_List_2017.csv")
    assert len(boxes) > 0
    assert set(boxes["Finding Label"]) <= {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule",
                                           "Pneumonia", "Pneumothorax"}  # fmt: skip
    x, y, w, h = (boxes[c].astype(float) for c in ("Bbox [x", "y", "w", "h]"))
    assert (x >= 0).all() and (y >= 0).all() and (w > 0).all() and (h > 0).all()
    assert (x + w <= SIZE).all() and (y + h <= SIZE).all()
    # each box names a label that image really has
    labels_of = dict(zip(entries["Image Index"], entries["Finding Labels"].str.replace("Infiltration", "Infiltrate")))
    assert all(lab in labels_of[img].split("|") for img, lab in zip(boxes["Image Index"], boxes["Finding Label"]))


def test_rsna_layout_dicom_and_boxes(synth):
    root = synth[1]["rsna"]
    assert _header(root / "stage_2_train_labels.csv") == "patientId,x,y,width,height,Target"
    assert _header(root / "stage_2_detailed_class_info.csv") == "patientId,class"
    lab, cls = _csv(root / "stage_2_train_labels.csv"), _csv(root / "stage_2_detailed_class_info.csv")
    assert len(lab) == len(cls) and (lab["patientId"].to_numpy() == cls["patientId"].to_numpy()).all()
    assert set(cls["class"]) == {"Lung Opacity", "No Lung Opacity / Not Normal", "Normal"}
    assert ((cls["class"] == "Lung Opacity") == (lab["Target"] == "1")).all()
    assert (lab.loc[lab["Target"] == "0", ["x", "y", "width", "height"]] == "").all().all()
    assert lab["patientId"].str.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}").all()
    assert lab["patientId"].duplicated().any() and cls.duplicated().any()  # one row per box, duplicated class rows
    ids = set(lab["patientId"])
    files = sorted((root / "stage_2_train_images").glob("*.dcm"))
    assert {p.stem for p in files} == ids and len(ids) == N
    assert len(list((root / "stage_2_test_images").glob("*.dcm"))) >= 2
    for p in files[:25]:
        ds = pydicom.dcmread(p)
        assert ds.PatientID == p.stem and ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.BitsAllocated, ds.BitsStored, ds.SamplesPerPixel, ds.PixelRepresentation) == (8, 8, 1, 0)
        assert ds.PatientSex in ("M", "F") and re.fullmatch(r"\d{1,3}", str(ds.PatientAge))
        assert ds.ViewPosition in ("PA", "AP")
        assert ds.pixel_array.shape == (SIZE, SIZE) and ds.pixel_array.dtype == np.uint8
    # boxes inside the image, and brighter than the same place on normal radiographs
    pos = lab[lab["Target"] == "1"].astype({c: float for c in ("x", "y", "width", "height")})
    assert ((pos.x >= 0) & (pos.y >= 0) & (pos.x + pos.width <= SIZE) & (pos.y + pos.height <= SIZE)).all()
    normals = [
        _gray(root / "stage_2_train_images" / f"{i}.dcm") for i in cls.loc[cls["class"] == "Normal", "patientId"]
    ]
    normal_mean = np.mean(normals, axis=0)
    diffs = []
    for r in pos.itertuples():
        img = _gray(root / "stage_2_train_images" / f"{r.patientId}.dcm")
        sl = np.s_[int(r.y) : int(r.y + r.height), int(r.x) : int(r.x + r.width)]
        diffs.append(img[sl].mean() - normal_mean[sl].mean())
    diffs = np.array(diffs)
    assert diffs.mean() > 12 and (diffs > 0).mean() > 0.9


def test_vindr_layout_readers_and_dicoms(synth):
    root = synth[1]["vindr_cxr"]
    ann = root / "annotations"
    assert len(VINDR_LABELS) == 28 and VINDR_LABELS[22:] == ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
                                                             "Other diseases", "No finding")  # fmt: skip
    assert _header(ann / "image_labels_train.csv") == "image_id,rad_id," + ",".join(VINDR_LABELS)
    assert _header(ann / "image_labels_test.csv") == "image_id," + ",".join(VINDR_TEST_LABELS)
    assert "Other disease" in VINDR_TEST_LABELS
    assert _header(ann / "annotations_train.csv") == "image_id,rad_id,class_name,x_min,y_min,x_max,y_max"
    train, test = _csv(ann / "image_labels_train.csv"), _csv(ann / "image_labels_test.csv")
    per_image = train.groupby("image_id")["rad_id"].agg(["size", "nunique"])
    assert (per_image["size"] == 3).all() and (per_image["nunique"] == 3).all()
    assert train["rad_id"].str.fullmatch(r"R([1-9]|1[0-7])").all()
    assert set(train[list(VINDR_LABELS)].to_numpy().ravel()) == {"0", "1"}
    assert test["image_id"].is_unique and set(test[list(VINDR_TEST_LABELS)].to_numpy().ravel()) == {"0", "1"}
    assert not set(train["image_id"]) & set(test["image_id"])
    assert train["image_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    # a reader's "No finding" is set exactly when that reader marked nothing else
    other = train[list(VINDR_LABELS[:-1])].astype(int).sum(axis=1)
    assert ((train["No finding"] == "1") == (other == 0)).all()
    boxes = _csv(ann / "annotations_train.csv")
    nf = boxes["class_name"] == "No finding"
    assert (boxes.loc[nf, ["x_min", "y_min", "x_max", "y_max"]] == "").all().all()
    assert set(boxes.loc[~nf, "class_name"]) <= set(VINDR_LOCAL_LABELS)
    assert (boxes.groupby(["image_id", "rad_id"]).size() > 0).all()
    # DICOMs: 16-bit, both photometric interpretations, readable; boxes within the image
    photometric, bits = set(), set()
    shapes = {}
    good = {"MONOCHROME1": [], "MONOCHROME2": []}
    for split in ("train", "test"):
        for p in sorted((root / split).glob("*.dicom")):
            ds = pydicom.dcmread(p)
            photometric.add(ds.PhotometricInterpretation)
            bits.add(int(ds.BitsStored))
            assert (ds.BitsAllocated, ds.HighBit, ds.PixelRepresentation) == (16, ds.BitsStored - 1, 0)
            assert ds.PatientSex in ("M", "F", "O") and re.fullmatch(r"(\d{3}Y)?", str(ds.PatientAge))
            a = ds.pixel_array
            assert a.dtype == np.uint16 and a.shape == (ds.Rows, ds.Columns) and a.max() < 2**ds.BitsStored
            shapes[p.stem] = a.shape
            # a correct reader (inverting MONOCHROME1) sees the spine brighter than the lungs
            g = _gray(p)
            h, w = a.shape
            m = min(h, w)
            at = lambda uu, vv: g[int(vv * m + (h - m) / 2), int(uu * m + (w - m) / 2)]  # noqa: E731
            good[ds.PhotometricInterpretation].append(at(0.5, 0.40) > max(at(0.33, 0.38), at(0.67, 0.38)))
    assert photometric == {"MONOCHROME1", "MONOCHROME2"} and len(bits) >= 2
    assert np.mean(good["MONOCHROME1"]) > 0.9 and np.mean(good["MONOCHROME2"]) > 0.9
    assert {s for s in shapes.values()} != {(SIZE, SIZE)} and all(s[0] != s[1] or s[0] == SIZE for s in shapes.values())
    for frame in (boxes[~nf], _csv(ann / "annotations_test.csv").query("class_name != 'No finding'")):
        xy = frame[["x_min", "y_min", "x_max", "y_max"]].astype(float).to_numpy()
        hw = np.array([shapes[i] for i in frame["image_id"]])
        assert (
            (xy[:, 0] >= 0).all()
            and (xy[:, 1] >= 0).all()
            and (xy[:, 0] < xy[:, 2]).all()
            and (xy[:, 1] < xy[:, 3]).all()
        )
        assert (xy[:, 2] <= hw[:, 1]).all() and (xy[:, 3] <= hw[:, 0]).all()


def test_shenzhen_layout(synth):
    root = synth[1]["shenzhen"]
    assert root.name == "ChinaSet_AllFiles"
    pngs = sorted((root / "CXR_png").glob("*.png"))
    txts = sorted((root / "ClinicalReadings").glob("*.txt"))
    assert [p.stem for p in pngs] == [t.stem for t in txts] and len(pngs) == N
    assert all(re.fullmatch(r"CHNCXR_\d{4}_[01]", p.stem) for p in pngs)
    assert [int(p.stem[7:11]) for p in pngs] == list(range(1, N + 1))
    for t in txts:
        lines = t.read_text().strip().splitlines()
        assert re.fullmatch(r"(male|female|Male|Female) \d+ ?yrs?", lines[0]), lines[0]
        reading = " ".join(lines[1:]).strip()
        assert (reading == "normal") == t.stem.endswith("_0")
        assert t.stem.endswith("_0") or "PTB" in reading
    with Image.open(pngs[0]) as im:
        assert im.mode == "L" and im.size == (SIZE, SIZE)


def test_mimic_layout_and_splits(synth):
    out, roots = synth
    root = roots["mimic_cxr"]
    assert MIMIC_LABELS == tuple(sorted(CHEXPERT_LABELS))
    assert _header(root / "mimic-cxr-2.0.0-chexpert.csv.gz") == "subject_id,study_id," + ",".join(MIMIC_LABELS)
    assert _header(root / "mimic-cxr-2.0.0-negbio.csv.gz") == "subject_id,study_id," + ",".join(MIMIC_LABELS)
    assert _header(root / "mimic-cxr-2.0.0-split.csv.gz") == "dicom_id,study_id,subject_id,split"
    assert _header(root / "mimic-cxr-2.0.0-metadata.csv.gz") == (
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
        "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
        "PatientOrientationCodeSequence_CodeMeaning"
    )
    meta, split = _csv(root / "mimic-cxr-2.0.0-metadata.csv.gz"), _csv(root / "mimic-cxr-2.0.0-split.csv.gz")
    chex = _csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert set(meta["dicom_id"]) == set(split["dicom_id"])
    assert meta["dicom_id"].str.fullmatch(r"([0-9a-f]{8}-){4}[0-9a-f]{8}").all()
    assert set(split["split"]) == {"train", "validate", "test"}
    assert split.groupby("subject_id")["split"].nunique().max() == 1
    assert {"PA", "AP", "LATERAL"} <= set(meta["ViewPosition"])
    assert meta.groupby("study_id").size().max() >= 2 and meta.groupby("subject_id")["study_id"].nunique().max() >= 2
    for r in meta.itertuples():
        assert (
            root / "files" / f"p{r.subject_id[:2]}" / f"p{r.subject_id}" / f"s{r.study_id}" / f"{r.dicom_id}.jpg"
        ).is_file()
    assert (meta["Rows"] == str(SIZE)).all() and (meta["Columns"] == str(SIZE)).all()
    assert set(map(tuple, chex[["subject_id", "study_id"]].to_numpy())) == set(
        map(tuple, meta[["subject_id", "study_id"]].to_numpy())
    )
    vals = set(_labels(chex, MIMIC_LABELS).ravel().tolist())
    assert {1.0, 0.0, -1.0} <= vals and any(np.isnan(v) for v in vals)
    pats = _csv(out / "mimic_cxr" / "mimic-iv" / "hosp" / "patients.csv.gz")
    assert list(pats.columns) == ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
    assert set(meta["subject_id"]) <= set(pats["subject_id"]) and set(pats["gender"]) == {"M", "F"}


# ------------------------------------------------------------------------------------ labels


def _counts_ok(frame_pos: dict[str, dict[str, int]]):
    bad = {(split, lab): c for split, per in frame_pos.items() for lab, c in per.items() if c < 2}
    assert not bad, f"labels with fewer than 2 positives: {bad}"


def test_every_label_has_positives_in_every_split(synth):
    roots = synth[1]
    counts = {}
    root = roots["chexpert"]
    for split in ("train", "valid"):
        f = _csv(root / f"{split}.csv")
        counts[f"chexpert/{split}"] = dict(zip(CHEXPERT_LABELS, (_labels(f, CHEXPERT_LABELS) == 1.0).sum(axis=0)))
    root = roots["nih14"]
    e = _csv(root / "Data_Entry_2017_v2020.csv").set_index("Image Index")
    for split, lst in (("train_val", "train_val_list.txt"), ("test", "test_list.txt")):
        tok = e.loc[(root / lst).read_text().split(), "Finding Labels"].str.split("|").explode()
        counts[f"nih14/{split}"] = {lab: int((tok == lab).sum()) for lab in NIH14_LABELS + ("No Finding",)}
    cls = _csv(roots["rsna"] / "stage_2_detailed_class_info.csv").drop_duplicates()
    counts["rsna"] = cls["class"].value_counts().to_dict()
    ann = roots["vindr_cxr"] / "annotations"
    tr = _csv(ann / "image_labels_train.csv")
    votes = tr[["image_id"] + list(VINDR_LABELS)].astype({c: int for c in VINDR_LABELS}).groupby("image_id").sum()
    counts["vindr/train"] = (votes >= 2).sum().to_dict()
    te = _csv(ann / "image_labels_test.csv")
    counts["vindr/test"] = (te[list(VINDR_TEST_LABELS)] == "1").sum().to_dict()
    stems = [p.stem for p in (roots["shenzhen"] / "CXR_png").glob("*.png")]
    counts["shenzhen"] = {"normal": sum(s.endswith("_0") for s in stems), "tb": sum(s.endswith("_1") for s in stems)}
    root = roots["mimic_cxr"]
    chex = _csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz")
    sp = _csv(root / "mimic-cxr-2.0.0-split.csv.gz")[["study_id", "split"]].drop_duplicates()
    chex = chex.merge(sp, on="study_id")
    for split in ("train", "validate", "test"):
        f = chex[chex["split"] == split]
        counts[f"mimic/{split}"] = dict(zip(MIMIC_LABELS, (_labels(f, MIMIC_LABELS) == 1.0).sum(axis=0)))
    assert len(counts["vindr/train"]) == 28 and len(counts["rsna"]) == 3
    _counts_ok(counts)


def test_prevalences_and_concept_table_are_consistent():
    for ds, table in LABEL_CONCEPTS.items():
        assert all(set(concepts) <= set(CONCEPTS) for concepts in table.values()), ds
    for ds, prev in PREVALENCE.items():
        assert set(prev) == set(LABEL_CONCEPTS[ds]), ds
        assert all(0.05 <= p <= 0.4 for p in prev.values()), ds
    # the same concept across datasets: effusion, nodules/masses, opacity
    assert (
        LABEL_CONCEPTS["nih14"]["Effusion"]
        == LABEL_CONCEPTS["chexpert"]["Pleural Effusion"]
        == LABEL_CONCEPTS["vindr_cxr"]["Pleural effusion"]
    )
    assert (
        LABEL_CONCEPTS["rsna"]["Lung Opacity"]
        == LABEL_CONCEPTS["vindr_cxr"]["Lung Opacity"]
        == LABEL_CONCEPTS["nih14"]["Infiltration"]
    )


def test_sex_is_recorded_in_each_datasets_own_place(synth):
    out, roots = synth
    assert {"Male", "Female"} <= set(_csv(roots["chexpert"] / "train.csv")["Sex"])
    assert set(_csv(roots["nih14"] / "Data_Entry_2017_v2020.csv")["Patient Gender"]) == {"M", "F"}
    rsna = {
        pydicom.dcmread(p, stop_before_pixels=True).PatientSex
        for p in (roots["rsna"] / "stage_2_train_images").glob("*.dcm")
    }
    assert rsna == {"M", "F"}
    vindr = {
        pydicom.dcmread(p, stop_before_pixels=True).PatientSex for p in (roots["vindr_cxr"] / "train").glob("*.dicom")
    }
    assert vindr == {"M", "F", "O"}
    first = {t.read_text().split()[0].lower() for t in (roots["shenzhen"] / "ClinicalReadings").glob("*.txt")}
    assert first == {"male", "female"}
    pats = _csv(out / "mimic_cxr" / "mimic-iv" / "hosp" / "patients.csv.gz")
    assert set(pats["gender"]) == {"M", "F"}


# ------------------------------------------------------------------------------------ images


def _lower_zone_mean(img: np.ndarray) -> float:
    h, w = img.shape
    rows = slice(int(0.56 * h), int(0.66 * h))
    zones = (img[rows, int(0.22 * w) : int(0.38 * w)], img[rows, int(0.62 * w) : int(0.78 * w)])
    return float(np.concatenate([z.ravel() for z in zones]).mean())


def test_female_images_differ_in_lower_lung_zones(synth):
    root = synth[1]["nih14"]
    e = _csv(root / "Data_Entry_2017_v2020.csv")
    e = e[e["Finding Labels"] == "No Finding"]
    files = {p.name: p for p in root.glob("images_*/images/*.png")}
    means = {
        g: [_lower_zone_mean(_gray(files[i])) for i in e.loc[e["Patient Gender"] == g, "Image Index"]] for g in "MF"
    }
    assert np.mean(means["F"]) > np.mean(means["M"]) + 5
    # and at the drawing level, the difference is in the lower zones, not the upper ones
    m = np.mean([draw_case(Case("M", "PA", (), k, k + 1), (SIZE, SIZE)).image for k in range(12)], axis=0)
    f = np.mean([draw_case(Case("F", "PA", (), k, k + 1), (SIZE, SIZE)).image for k in range(12)], axis=0)
    lower = _lower_zone_mean(f) - _lower_zone_mean(m)
    upper = abs(f[int(0.3 * SIZE) : int(0.38 * SIZE), int(0.25 * SIZE) : int(0.38 * SIZE)].mean()
                - m[int(0.3 * SIZE) : int(0.38 * SIZE), int(0.25 * SIZE) : int(0.38 * SIZE)].mean())  # fmt: skip
    assert lower > 0.03 and lower > 2 * upper


@pytest.mark.parametrize("concept", CONCEPTS)
def test_each_concept_is_drawn_inside_its_box(concept):
    ok = 0
    for k in range(4):
        base = draw_case(Case("M", "PA", (), 100 + k, 200 + k), (SIZE, SIZE))
        withf = draw_case(Case("M", "PA", (Finding(concept),), 100 + k, 200 + k), (SIZE, SIZE))
        assert withf.boxes.get(0), f"{concept}: no box"
        diff = np.abs(withf.image - base.image)
        inside = np.zeros(diff.shape, bool)
        for x0, y0, x1, y1 in withf.boxes[0]:
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            inside[int(y0) : int(y1), int(x0) : int(x1)] = True
        ok += diff[inside].mean() > 0.02 and diff[inside].mean() > 4 * diff[~inside].mean()
    assert ok >= 3, concept


def test_uncertain_findings_are_drawn_fainter():
    for concept in ("effusion", "opacity", "nodule", "cardiomegaly"):
        base = draw_case(Case("F", "AP", (), 5, 6), (SIZE, SIZE)).image
        full = np.abs(draw_case(Case("F", "AP", (Finding(concept, 1.0),), 5, 6), (SIZE, SIZE)).image - base).sum()
        half = np.abs(draw_case(Case("F", "AP", (Finding(concept, 0.5),), 5, 6), (SIZE, SIZE)).image - base).sum()
        assert 0 < half < full, concept


def test_sites_look_different(synth):
    roots = synth[1]
    samples = {
        "nih14": sorted(roots["nih14"].glob("images_*/images/*.png"))[:20],
        "shenzhen": sorted((roots["shenzhen"] / "CXR_png").glob("*.png"))[:20],
        "chexpert": sorted(roots["chexpert"].glob("train/*/*/view1_frontal.jpg"))[:20],
    }
    stats = {
        k: np.mean([[_gray(p)[:, :6].mean(), _gray(p)[40:90, 30:100].std()] for p in v], axis=0)
        for k, v in samples.items()
    }
    vals = np.array(list(stats.values()))
    assert np.ptp(vals[:, 0]) > 3 or np.ptp(vals[:, 1]) > 3


# ------------------------------------------------------------------------------------ determinism


def _snapshot(out: Path) -> dict[str, object]:
    snap: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(out).as_posix()
        if p.suffix in (".csv", ".gz", ".txt", ".json"):
            snap[rel] = p.read_bytes()
        elif p.suffix in (".dcm", ".dicom"):
            snap[rel] = pydicom.dcmread(p).pixel_array.tobytes()
        else:
            snap[rel] = np.asarray(Image.open(p)).tobytes()
    return snap


def test_same_seed_same_bytes_other_seed_different(tmp_path):
    def run(name: str, seed: int, **kw) -> dict[str, object]:
        synthesize(tmp_path / name, seed=seed, n=30, size=64, **kw)
        return _snapshot(tmp_path / name)

    a, b, c = run("a", 3), run("b", 3), run("c", 4)
    assert len(a) > 200 and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    csvs = [k for k in a if k.endswith((".csv", ".csv.gz"))]
    assert len(csvs) == 15 and all(c.get(k) != a[k] for k in csvs)
    shared_images = [k for k in a.keys() & c.keys() if k.endswith((".png", ".jpg"))]
    assert shared_images and all(a[k] != c[k] for k in shared_images)
    # datasets have independent streams: writing one alone gives the same files
    d = run("d", 3, datasets=["shenzhen"])
    assert len(d) == 61 and all(d[k] == a[k] for k in d if k != "SYNTH.json")


def test_rejects_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic dataset"):
        synthesize(tmp_path, datasets=["padchest"])
    with pytest.raises(ValueError, match="n >= 10"):
        synthesize(tmp_path, n=5)
    assert not (tmp_path / "SYNTH.json").exists()
