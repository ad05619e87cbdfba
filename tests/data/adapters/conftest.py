"""Tiny dataset folders in each provider's official layout, written by hand (no dependency on arkx.synth).

Helpers are plain functions (imported by the test modules) so each test states the rows it needs.
Headers are written as literal text, exactly as the providers ship them.
"""

from __future__ import annotations

import importlib.util

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

def _xrv_data_dir() -> Path:
    """The providers' real label files shipped in the torchxrayvision wheel (a test extra), else /tmp/xrv."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is not None and spec.submodule_search_locations:
        for place in spec.submodule_search_locations:
            if (Path(place) / "data").is_dir():
                return Path(place) / "data"
    return Path("/tmp/xrv/torchxrayvision/data")


XRV_DATA = _xrv_data_dir()

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,"
    "Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,"
    "Fracture,Support Devices"
)
NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
#: MIMIC-CXR-JPG label files: the 14 observations in alphabetical order
MIMIC_LABEL_HEADER = (
    "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,"
    "Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices"
)
MIMIC_ALPHABETICAL = MIMIC_LABEL_HEADER.split(",")[2:]
VINDR_LABELS = (
    "Aortic enlargement,Atelectasis,Calcification,Cardiomegaly,Clavicle fracture,Consolidation,Edema,Emphysema,"
    "Enlarged PA,ILD,Infiltration,Lung Opacity,Lung cavity,Lung cyst,Mediastinal shift,Nodule/Mass,"
    "Pleural effusion,Pleural thickening,Pneumothorax,Pulmonary fibrosis,Rib fracture,Other lesion,"
    "COPD,Lung tumor,Pneumonia,Tuberculosis,Other diseases,No finding"
).split(",")


def write_text(path: Path, lines: list[str], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_dicom(path: Path, sex: str | None = None, age: str | None = None, view: str | None = None) -> Path:
    """A tiny valid DICOM file (4x4 pixels) with the given header fields."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    if sex is not None:
        ds.PatientSex = sex
    if age is not None:
        with warnings.catch_warnings():  # RSNA writes ages like "51", which are not valid AS strings
            warnings.simplefilter("ignore", UserWarning)
            ds.PatientAge = age
    if view is not None:
        ds.ViewPosition = view
    ds.Rows, ds.Columns = 4, 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.arange(16, dtype=np.uint8).tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------ CheXpert


def chexpert_row(prefix: str, part: str, patient: int, study: int, view: int, sex: str, age: int,
                 fl: str, ap: str, labels: list[str]) -> str:
    lateral = fl == "Lateral"
    name = f"view{view}_{'lateral' if lateral else 'frontal'}.jpg"
    path = f"{prefix}/{part}/patient{patient:05d}/study{study}/{name}"
    return ",".join([path, sex, str(age), fl, ap, *labels])


def write_chexpert(tmp: Path, prefix: str = "CheXpert-v1.0-small", folder: str | None = None,
                   n_train_patients: int = 30, images: bool = True) -> Path:
    """train.csv: ``n_train_patients`` patients with 2 images each (frontal AP/PA + lateral);
    valid.csv: patients 64541, 64542 (frontal only). Patient 1's first image carries the raw -1 / blank cases."""
    root = tmp / (folder or prefix)
    rows = []
    for p in range(1, n_train_patients + 1):
        lab = ["" for _ in range(14)]
        lab[p % 14] = "1.0"
        lab[(p + 3) % 14] = "-1.0"
        lab[(p + 5) % 14] = "0.0"
        sex = "Unknown" if p == 2 else ("Male" if p % 2 else "Female")
        rows.append(chexpert_row(prefix, "train", p, 1, 1, sex, 40 + p, "Frontal", "AP" if p % 3 else "PA", lab))
        rows.append(chexpert_row(prefix, "train", p, 1, 2, sex, 40 + p, "Lateral", "", lab))
    valid = []
    for p in (64541, 64542):
        lab = ["0.0"] * 14
        lab[2] = "1.0"
        valid.append(chexpert_row(prefix, "valid", p, 1, 1, "Female", 70, "Frontal", "PA", lab))
    write_text(root / "train.csv", [CHEXPERT_HEADER, *rows])
    write_text(root / "valid.csv", [CHEXPERT_HEADER, *valid])
    if images:
        for line in rows + valid:
            touch(root / line.split(",")[0].split("/", 1)[1])
    return root


# ------------------------------------------------------------------------------------------ NIH14


def nih_row(name: str, findings: str, patient: int, age: int = 50, sex: str = "M", view: str = "PA") -> str:
    return f"{name},{findings},0,{patient},{age},{sex},{view},2500,2048,0.168,0.168"


NIH_ENTRIES = [  # (image, findings, patient)
    ("00000001_000.png", "Cardiomegaly", 1), ("00000001_001.png", "Cardiomegaly|Emphysema", 1),
    ("00000002_000.png", "No Finding", 2), ("00000003_000.png", "Hernia", 3),
    ("00000003_001.png", "Infiltration|Mass|Pleural_Thickening", 3), ("00000004_000.png", "No Finding", 4),
    ("00000005_000.png", "Effusion", 5), ("00000005_001.png", "Atelectasis|Effusion", 5),
    ("00000006_000.png", "Nodule", 6), ("00000007_000.png", "Pneumothorax", 7),
]  # fmt: skip
NIH_TEST = ["00000005_000.png", "00000005_001.png", "00000007_000.png"]


def write_nih14(root: Path, entries=NIH_ENTRIES, test=NIH_TEST, flat: bool = False,
                old_file: bool = False, bbox: list[str] | None = None) -> Path:
    rows = [nih_row(n, f, p, sex="F" if p % 2 == 0 else "M", view="AP" if p == 3 else "PA") for n, f, p in entries]
    if old_file:  # Data_Entry_2017.csv: same columns plus a trailing empty one
        write_text(root / "Data_Entry_2017.csv", [NIH_HEADER + ",", *(r + "," for r in rows)])
    else:
        write_text(root / "Data_Entry_2017_v2020.csv", [NIH_HEADER, *rows])
    names = [n for n, _, _ in entries]
    write_text(root / "train_val_list.txt", [n for n in names if n not in test])
    write_text(root / "test_list.txt", list(test))
    for i, n in enumerate(names):
        touch(root / ("images" if flat else f"images_{1 + i % 2:03d}/images") / n)
    if bbox is not None:
        write_text(root / "BBox_List_2017.csv", ["Image Index,Finding Label,Bbox [x,y,w,h],,,", *bbox])
    return root


# ------------------------------------------------------------------------------------------ RSNA

RSNA_ROWS = [  # patientId, x, y, width, height, Target, class
    ("p-normal", "", "", "", "", 0, "Normal"),
    ("p-other", "", "", "", "", 0, "No Lung Opacity / Not Normal"),
    ("p-op", "264.0", "152.0", "213.0", "379.0", 1, "Lung Opacity"),
    ("p-op", "562.0", "152.0", "256.0", "453.0", 1, "Lung Opacity"),
    ("p-op2", "100.0", "200.0", "50.0", "60.0", 1, "Lung Opacity"),
]


def write_rsna(root: Path, rows=RSNA_ROWS, n_extra_normals: int = 0, dicoms: bool = True) -> Path:
    rows = list(rows) + [(f"p-extra{i}", "", "", "", "", 0, "Normal") for i in range(n_extra_normals)]
    write_text(root / "stage_2_train_labels.csv",
               ["patientId,x,y,width,height,Target", *(f"{r[0]},{r[1]},{r[2]},{r[3]},{r[4]},{r[5]}" for r in rows)])
    write_text(root / "stage_2_detailed_class_info.csv", ["patientId,class", *(f"{r[0]},{r[6]}" for r in rows)])
    if dicoms:
        for k, pid in enumerate(dict.fromkeys(r[0] for r in rows)):
            write_dicom(root / "stage_2_train_images" / f"{pid}.dcm", sex="F" if k % 2 else "M", age=str(30 + k),
                        view="AP" if k % 2 else "PA")
    return root


# ------------------------------------------------------------------------------------------ VinDr-CXR


def vindr_row(image_id: str, rad: str | None, positives: dict[str, int], test: bool = False) -> str:
    values = [str(positives.get(name, 0)) for name in VINDR_LABELS]
    return ",".join([image_id] + ([rad] if rad is not None else []) + values)


def write_vindr(root: Path, train: dict[str, list[dict[str, int]]], test: dict[str, dict[str, int]],
                reader_col: str = "rad_id", dicoms: bool = True) -> Path:
    """``train``: image_id -> one positives dict per reader (R1, R2, ...); ``test``: image_id -> positives."""
    ann = root / "annotations"
    test_labels = [("Other disease" if n == "Other diseases" else n) for n in VINDR_LABELS]
    write_text(ann / "image_labels_train.csv",
               [",".join(["image_id", reader_col, *VINDR_LABELS]),
                *(vindr_row(i, f"R{k + 1}", pos) for i, readers in train.items() for k, pos in enumerate(readers))])
    write_text(ann / "image_labels_test.csv",
               [",".join(["image_id", *test_labels]), *(vindr_row(i, None, pos) for i, pos in test.items())])
    first_train, first_test = next(iter(train)), next(iter(test))
    write_text(ann / "annotations_train.csv", [
        "image_id,rad_id,class_name,x_min,y_min,x_max,y_max",
        f"{first_train},R1,Cardiomegaly,691.0,1375.0,1653.0,1831.0",
        f"{first_train},R2,Aortic enlargement,1264.0,743.0,1611.0,1019.0",
        f"{first_train},R3,No finding,,,,",
    ])  # fmt: skip
    write_text(ann / "annotations_test.csv", [
        "image_id,class_name,x_min,y_min,x_max,y_max",
        f"{first_test},Nodule/Mass,10.0,20.0,30.0,40.0",
        f"{first_test},No finding,,,,",
    ])  # fmt: skip
    if dicoms:
        for part, ids in (("train", train), ("test", test)):
            for k, image_id in enumerate(ids):
                write_dicom(root / part / f"{image_id}.dicom", sex=("M", "F", "O")[k % 3], age=f"{40 + k:03d}Y")
    return root


# ------------------------------------------------------------------------------------------ MIMIC


def write_mimic(root: Path, studies: list[tuple[int, int, list[tuple[str, str]], str]],
                labels: dict[tuple[int, int], dict[str, str]], gz: bool = True,
                extra_split_rows: list[str] = ()) -> Path:
    """``studies``: (subject_id, study_id, [(dicom_id, ViewPosition)], split);
    ``labels``: (subject, study) -> {label name: value} (others blank), written under the alphabetical header."""
    suffix = ".csv.gz" if gz else ".csv"
    meta = ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,"
            "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
            "PatientOrientationCodeSequence_CodeMeaning"]
    split = ["dicom_id,study_id,subject_id,split"]
    for subj, study, dicoms, part in studies:
        for dicom_id, view in dicoms:
            meta.append(f"{dicom_id},{subj},{study},CHEST (PA AND LAT),{view},3056,2544,21800506,213014.531,"
                        f"CHEST (PA AND LAT),postero-anterior,Erect")
            split.append(f"{dicom_id},{study},{subj},{part}")
    split += list(extra_split_rows)
    rows = [MIMIC_LABEL_HEADER]
    for (subj, study), values in labels.items():
        rows.append(",".join([str(subj), str(study), *(values.get(n, "") for n in MIMIC_ALPHABETICAL)]))
    write_text(root / f"mimic-cxr-2.0.0-metadata{suffix}", meta, gz=gz)
    write_text(root / f"mimic-cxr-2.0.0-split{suffix}", split, gz=gz)
    write_text(root / f"mimic-cxr-2.0.0-chexpert{suffix}", rows, gz=gz)
    write_text(root / f"mimic-cxr-2.0.0-negbio{suffix}", rows, gz=gz)
    return root


@pytest.fixture
def xrv_data() -> Path:
    return XRV_DATA
