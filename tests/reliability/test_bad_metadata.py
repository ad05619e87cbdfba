"""Bad metadata in the Ark-6 providers' files: every case is one DatasetFormatError naming the file
and the row (or line / image), never a pandas/numpy traceback and never a silent repair -- except
boxes reaching outside their image, which are kept as written and reported by a warning (documented
in ``arkx.data.adapters._common.validate_boxes``)."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from arkx.data.adapters import read_dataset
from arkx.data.records import DatasetFormatError

from ..data.adapters.conftest import (NIH_ENTRIES, write_chexpert, write_mimic, write_nih14, write_rsna,
                                      write_text, write_vindr)

VINDR_TRAIN = {"img1": [{"Pneumonia": 1}, {"Pneumonia": 1}, {"COPD": 1}], "img2": [{"No finding": 1}] * 3}
VINDR_TEST = {"t1": {"Other diseases": 1}, "t2": {"No finding": 1}}


def edit(path: Path, fn) -> None:
    """Rewrite the lines of a (possibly gzipped) text file with ``fn(lines) -> lines``."""
    gz = path.suffix == ".gz"
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    write_text(path, fn(raw.decode().splitlines()), gz=gz)


def set_cell(line: str, column: int, value: str) -> str:
    cells = line.split(",")
    cells[column] = value
    return ",".join(cells)


def _chexpert(tmp, fn):
    root = write_chexpert(tmp, n_train_patients=4)
    edit(root / "train.csv", fn)
    return "chexpert", root, {}


def _nih(tmp, fn=None, file="Data_Entry_2017_v2020.csv", bbox=None, entries=NIH_ENTRIES):
    root = write_nih14(tmp / "nih", entries=entries, bbox=bbox)
    if fn is not None:
        edit(root / file, fn)
    return "nih14", root, {}


def _rsna(tmp, rows_fn=None, file="stage_2_train_labels.csv"):
    root = write_rsna(tmp / "rsna", dicoms=False)
    if rows_fn is not None:
        edit(root / file, rows_fn)
    return "rsna", root, {"read_dicom_metadata": False}


def _vindr(tmp, fn, file):
    root = write_vindr(tmp / "vindr", VINDR_TRAIN, VINDR_TEST, dicoms=False)
    edit(root / "annotations" / file, fn)
    return "vindr_cxr", root, {"read_dicom_metadata": False}


def _mimic(tmp, fn, kind):
    studies = [(10000032, 50000000, [("d0", "PA")], "train"), (10000764, 50000001, [("d1", "PA")], "test")]
    labels = {(10000032, 50000000): {"Edema": "1.0"}, (10000764, 50000001): {}}
    root = write_mimic(tmp / "mimic", studies, labels)
    edit(root / f"mimic-cxr-2.0.0-{kind}.csv.gz", fn)
    return "mimic_cxr", root, {}


CASES = {
    # ---- CheXpert: label columns, values, ids
    "chexpert-missing-label-column": (
        lambda t: _chexpert(t, lambda L: [L[0].replace(",Edema,", ",Oedema,"), *L[1:]]),
        r"train.csv lacks column\(s\) \['Edema'\]"),
    "chexpert-label-2": (
        lambda t: _chexpert(t, lambda L: [*L[:4], set_cell(L[4], 7, "2.0"), *L[5:]]),
        r"train.csv row 5 column 'Cardiomegaly': value .*2\.0.* is not one of \[-1.0, 0.0, 1.0\] or blank"),
    "chexpert-label-text": (
        lambda t: _chexpert(t, lambda L: [*L[:2], set_cell(L[2], 15, "yes"), *L[3:]]),
        r"train.csv row 3 column 'Pleural Effusion': value 'yes'"),
    "chexpert-label-fraction": (
        lambda t: _chexpert(t, lambda L: [*L[:3], set_cell(L[3], 18, "0.5"), *L[4:]]),
        r"train.csv row 4 column 'Support Devices': value .*0\.5"),
    "chexpert-duplicated-image": (
        lambda t: _chexpert(t, lambda L: [*L, L[1]]),
        r"chexpert: image id 'train/patient00001/study1/view1_frontal' appears more than once"),
    "chexpert-path-without-patient": (
        lambda t: _chexpert(t, lambda L: [*L[:2], L[2].replace("patient00001", "p1"), *L[3:]]),
        r"train.csv row 3: Path .* has no patientNNNNN folder"),
    # ---- NIH ChestX-ray14: findings, columns, ids, split lists, boxes
    "nih-unknown-finding": (
        lambda t: _nih(t, lambda L: [*L[:3], L[3].replace("No Finding", "Cardiomegally"), *L[4:]]),
        r"Data_Entry_2017_v2020.csv row 4 \(00000002_000.png\): unknown finding\(s\) \['Cardiomegally'\]"),
    "nih-finding-wrong-case": (
        lambda t: _nih(t, lambda L: [*L[:1], L[1].replace("Cardiomegaly", "cardiomegaly"), *L[2:]]),
        r"row 2 \(00000001_000.png\): unknown finding\(s\) \['cardiomegaly'\]"),
    "nih-empty-findings": (
        lambda t: _nih(t, lambda L: [*L[:1], L[1].replace("Cardiomegaly", ""), *L[2:]]),
        r"row 2 \(00000001_000.png\): unknown finding"),
    "nih-missing-column": (
        lambda t: _nih(t, lambda L: [L[0].replace("Patient ID", "PatientID"), *L[1:]]),
        r"Data_Entry_2017_v2020.csv lacks column\(s\) \['Patient ID'\]"),
    "nih-duplicated-image": (
        lambda t: _nih(t, lambda L: [*L, L[2]]),
        r"Data_Entry_2017_v2020.csv: image '00000001_001.png' listed twice"),
    "nih-split-names-unknown-image": (
        lambda t: _nih(t, lambda L: [*L, "09999999_000.png"], file="test_list.txt"),
        r"test_list.txt line 4: image '09999999_000.png' is not in Data_Entry_2017_v2020.csv"),
    "nih-image-in-both-lists": (
        lambda t: _nih(t, lambda L: [*L, "00000001_000.png"], file="test_list.txt"),
        r"image '00000001_000.png' is listed in both split lists"),
    "nih-image-in-no-list": (
        lambda t: _nih(t, lambda L: L[1:], file="train_val_list.txt"),
        r"1 images of Data_Entry_2017_v2020.csv are in neither .* e.g. \['00000001_000.png'\]"),
    "nih-bbox-negative-width": (
        lambda t: _nih(t, bbox=["00000001_000.png,Cardiomegaly,100,200,50,60",
                                "00000003_001.png,Mass,10,20,-30,40"]),
        r"BBox_List_2017.csv row 3 \(image 00000003_001\): negative width or height"),
    "nih-bbox-negative-height": (
        lambda t: _nih(t, bbox=["00000001_000.png,Cardiomegaly,100,200,50,-0.5"]),
        r"BBox_List_2017.csv row 2 \(image 00000001_000\): negative width or height"),
    "nih-bbox-not-a-number": (
        lambda t: _nih(t, bbox=["00000001_000.png,Cardiomegaly,100,200,50,60",
                                "00000001_000.png,Cardiomegaly,abc,200,50,60"]),
        r"BBox_List_2017.csv row 3 \(image 00000001_000\): coordinate 'x_min' is missing or not a finite number"),
    "nih-bbox-missing-value": (
        lambda t: _nih(t, bbox=["00000001_000.png,Cardiomegaly,100,200,,60"]),
        r"BBox_List_2017.csv row 2 \(image 00000001_000\): coordinate 'x_max' is missing"),
    "nih-bbox-unknown-image": (
        lambda t: _nih(t, bbox=["09999999_000.png,Mass,1,2,3,4"]),
        r"BBox_List_2017.csv row 2: image '09999999_000.png' is not in Data_Entry"),
    # ---- RSNA: Target, class, boxes
    "rsna-target-2": (
        lambda t: _rsna(t, lambda L: [*L[:2], L[2].replace(",0", ",2"), *L[3:]]),
        r"stage_2_train_labels.csv row 3 column 'Target': value .*2.* is not 0 or 1"),
    "rsna-missing-column": (
        lambda t: _rsna(t, lambda L: [L[0].replace("height", "h"), *L[1:]]),
        r"stage_2_train_labels.csv lacks column\(s\) \['height'\]"),
    "rsna-box-without-height": (
        lambda t: _rsna(t, lambda L: [*L[:3], "p-op,264.0,152.0,213.0,,1", *L[4:]]),
        r"stage_2_train_labels.csv row 4 \(patientId p-op\): Target 1 but box"),
    "rsna-negative-width": (
        lambda t: _rsna(t, lambda L: [*L[:4], "p-op,562.0,152.0,-256.0,453.0,1", *L[5:]]),
        r"stage_2_train_labels.csv row 5 \(image p-op\): negative width or height"),
    "rsna-negative-height": (
        lambda t: _rsna(t, lambda L: [*L[:5], "p-op2,100.0,200.0,50.0,-60.0,1", *L[6:]]),
        r"stage_2_train_labels.csv row 6 \(image p-op2\): negative width or height"),
    "rsna-infinite-coordinate": (
        lambda t: _rsna(t, lambda L: [*L[:5], "p-op2,100.0,inf,50.0,60.0,1", *L[6:]]),
        r"stage_2_train_labels.csv row 6 \(image p-op2\): coordinate 'y_min' is missing or not a finite number"),
    "rsna-unknown-class": (
        lambda t: _rsna(t, lambda L: [*L[:1], L[1].replace("Normal", "Healthy"), *L[2:]],
                        file="stage_2_detailed_class_info.csv"),
        r"stage_2_detailed_class_info.csv row 2 column 'class': 'Healthy'"),
    # ---- VinDr-CXR: label values, ids, boxes
    "vindr-label-2": (
        lambda t: _vindr(t, lambda L: [*L[:2], set_cell(L[2], 24, "2"), *L[3:]], "image_labels_train.csv"),
        r"image_labels_train.csv row 3 column 'COPD'"),
    "vindr-missing-label-column": (
        lambda t: _vindr(t, lambda L: [L[0].replace(",COPD,", ",CPOD,"), *L[1:]], "image_labels_test.csv"),
        r"image_labels_test.csv lacks label column 'COPD'"),
    "vindr-duplicated-test-image": (
        lambda t: _vindr(t, lambda L: [*L, L[1]], "image_labels_test.csv"),
        r"image_labels_test.csv: image 't1' listed twice"),
    "vindr-same-reader-twice": (
        lambda t: _vindr(t, lambda L: [*L, L[1]], "image_labels_train.csv"),
        r"image_labels_train.csv: image img1 read twice by R1"),
    "vindr-box-x-max-below-x-min": (
        lambda t: _vindr(t, lambda L: [*L[:2], "img1,R2,Aortic enlargement,1611.0,743.0,1264.0,1019.0", *L[3:]],
                         "annotations_train.csv"),
        r"annotations_train.csv row 3 \(image img1\): negative width or height"),
    "vindr-box-partly-blank": (
        lambda t: _vindr(t, lambda L: [*L[:2], "t1,Nodule/Mass,10.0,20.0,,40.0", *L[3:]], "annotations_test.csv"),
        r"annotations_test.csv row 3 \(image t1\): coordinate 'x_max' is missing"),
    "vindr-box-of-unknown-image": (
        lambda t: _vindr(t, lambda L: [*L, "ghost,R1,Cardiomegaly,1,2,3,4"], "annotations_train.csv"),
        r"annotations_train.csv row 5: image 'ghost' has no image labels"),
    # ---- MIMIC-CXR-JPG: ids, split file
    "mimic-duplicated-dicom": (
        lambda t: _mimic(t, lambda L: [*L, L[1]], "metadata"),
        r"metadata.csv.gz: dicom_id 'd0' appears twice"),
    "mimic-split-names-missing-image": (
        lambda t: _mimic(t, lambda L: [*L, "ghost,50000000,10000032,train"], "split"),
        r"split.csv.gz names dicom_id 'ghost', absent from mimic-cxr-2.0.0-metadata.csv.gz"),
    "mimic-study-labelled-twice": (
        lambda t: _mimic(t, lambda L: [*L, L[1]], "chexpert"),
        r"chexpert.csv.gz: study s50000000(\.0)? of p10000032(\.0)? is labelled twice"),
    "mimic-label-minus-2": (
        lambda t: _mimic(t, lambda L: [*L[:1], L[1].replace("1.0", "-2.0"), *L[2:]], "chexpert"),
        r"chexpert.csv.gz row 2 column 'Edema': value .*-2\.0"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_metadata_is_one_clear_error_naming_file_and_row(tmp_path, case):
    make, pattern = CASES[case]
    dataset, root, options = make(tmp_path)
    with pytest.raises(DatasetFormatError, match=pattern) as err:
        read_dataset(dataset, root, **options)
    assert str(err.value).startswith(f"{dataset}: "), str(err.value)


def test_shenzhen_file_name_without_label_suffix(tmp_path):
    root = tmp_path / "ChinaSet_AllFiles"
    (root / "CXR_png").mkdir(parents=True)
    (root / "CXR_png" / "CHNCXR_0001_0.png").write_bytes(b"")
    (root / "CXR_png" / "CHNCXR_0002.png").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match=r"CHNCXR_0002.png: expected a name like CHNCXR_0001_0.png"):
        read_dataset("shenzhen", root)


@pytest.mark.parametrize("dataset", ["rsna", "vindr_cxr"])
def test_boxes_outside_the_image_are_kept_and_reported(tmp_path, dataset, caplog):
    """The DICOM headers say the images are 4x4 px (Rows/Columns, read with the other header fields):
    the providers' boxes reach outside them; they are kept as written, with one warning per file
    naming the first row and the image size, and counted in ``notes``."""
    if dataset == "rsna":
        root, file, first_row = write_rsna(tmp_path / "r"), "stage_2_train_labels.csv", 4
        expected = [264.0, 152.0, 477.0, 531.0]
    else:
        root, file, first_row = write_vindr(tmp_path / "v", VINDR_TRAIN, VINDR_TEST), "annotations_train.csv", 2
        expected = [691.0, 1375.0, 1653.0, 1831.0]
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        rec = read_dataset(dataset, root)
    assert rec.boxes.iloc[0][["x_min", "y_min", "x_max", "y_max"]].tolist() == expected
    assert rec.notes["boxes_outside_image"] == len(rec.boxes)
    warned = [r.getMessage() for r in caplog.records if "reach outside their image" in r.getMessage()]
    assert warned and file in warned[0] and f"first at row {first_row}" in warned[0] and "(4, 4)" in warned[0]
    # without the headers the size is unknown: nothing to report
    caplog.clear()
    rec = read_dataset(dataset, root, read_dicom_metadata=False)
    assert rec.notes["boxes_outside_image"] == 0 and not caplog.records


def test_negative_coordinates_are_reported_even_without_image_size(tmp_path, caplog):
    root = write_nih14(tmp_path, bbox=["00000001_000.png,Cardiomegaly,-3,200,50,60"])
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        rec = read_dataset("nih14", root)
    assert rec.boxes["x_min"].tolist() == [-3.0]
    assert any("BBox_List_2017.csv: 1 box(es) reach outside" in r.getMessage() and "row 2" in r.getMessage()
               for r in caplog.records)
