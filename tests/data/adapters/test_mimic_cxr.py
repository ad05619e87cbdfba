from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.adapters.chexpert import CHEXPERT_LABELS
from arkx.data.records import DatasetFormatError

from .conftest import MIMIC_ALPHABETICAL, write_mimic, write_text

SUBJECTS = [10000032, 10000764, 11000011, 12000022]


def _studies():
    out, labels = [], {}
    for k, subj in enumerate(SUBJECTS):
        split = ("train", "train", "validate", "test")[k]
        study = 50000000 + k
        out.append((subj, study, [(f"d{k}-pa", "PA"), (f"d{k}-lat", "LATERAL")], split))
        labels[(subj, study)] = {"Edema": "1.0", "Fracture": "-1.0", "Cardiomegaly": "0.0"} if k == 0 else {}
    out.append((SUBJECTS[0], 50000099, [("d9-ap", "AP"), ("d9-noview", "")], "train"))  # study without label row
    return out, labels


def test_label_taken_by_name_not_position(tmp_path):
    # one study per label, only that label positive: every head output must get its own column's value
    studies, labels = [], {}
    for k, name in enumerate(MIMIC_ALPHABETICAL):
        studies.append((10000000 + k, 50000000 + k, [(f"dicom{k}", "PA")], "train"))
        labels[(10000000 + k, 50000000 + k)] = {name: "1.0"}
    rec = read_dataset("mimic_cxr", write_mimic(tmp_path, studies, labels))
    assert rec.label_names == CHEXPERT_LABELS and rec.label_names != tuple(MIMIC_ALPHABETICAL)
    for k, name in enumerate(MIMIC_ALPHABETICAL):
        row = rec.labels[int(np.flatnonzero(rec.images["image_id"].to_numpy() == f"dicom{k}")[0])]
        assert rec.label_names[int(np.nanargmax(row))] == name
        assert np.isnan(row).sum() == 13
    edema = rec.label_names.index("Edema")
    assert rec.labels[MIMIC_ALPHABETICAL.index("Edema"), edema] == 1.0


def test_study_labels_splits_views_paths(tmp_path):
    studies, labels = _studies()
    rec = read_dataset("mimic_cxr", write_mimic(tmp_path, studies, labels))
    assert rec.images["image_id"].tolist() == ["d0-pa", "d1-pa", "d2-pa", "d3-pa", "d9-ap"]
    assert rec.notes["dropped_by_view"] == 5  # 4 laterals + 1 without ViewPosition
    assert rec.images["split"].tolist() == ["train", "train", "val", "test", "train"]
    y = dict(zip(rec.label_names, rec.labels[0]))
    assert y["Edema"] == 1 and y["Fracture"] == -1 and y["Cardiomegaly"] == 0 and np.isnan(y["Pneumonia"])
    assert np.isnan(rec.labels[4]).all()  # study without a label row
    assert rec.notes["images_without_label_row"] == 2
    assert rec.images["path"][0] == "files/p10/p10000032/s50000000/d0-pa.jpg"
    assert rec.images["patient_id"][0] == "10000032"
    assert rec.images["sex"].isna().all()


def test_views_none_keeps_all_and_lateral_labels_per_study(tmp_path):
    studies, labels = _studies()
    rec = read_dataset("mimic_cxr", write_mimic(tmp_path, studies, labels, gz=False), views=None)
    assert len(rec) == 10 and "dropped_by_view" not in rec.notes
    np.testing.assert_array_equal(rec.labels[0], rec.labels[1])  # PA and lateral of one study share labels
    assert rec.images["view"].tolist()[1] == "LATERAL" and rec.images["view"].tolist()[-1] is None
    splits = rec.images.groupby("patient_id")["split"].nunique()
    assert (splits == 1).all()


def test_negbio_labeler_reads_negbio_file(tmp_path):
    studies, labels = _studies()
    root = write_mimic(tmp_path, studies, labels)
    (root / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    rec = read_dataset("mimic_cxr", root, labeler="negbio")
    assert rec.notes["label_file"] == "mimic-cxr-2.0.0-negbio.csv.gz"
    with pytest.raises(DatasetFormatError, match="mimic-cxr-2.0.0-chexpert.csv"):
        read_dataset("mimic_cxr", root)


def test_patients_file_sex_and_age(tmp_path):
    studies, labels = _studies()
    root = write_mimic(tmp_path / "mimic-cxr-jpg" / "2.0.0", studies, labels)
    rows = ["subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod"]
    rows += [f"{s},{'F' if k % 2 else 'M'},{50 + k},2180,2008 - 2010," for k, s in enumerate(SUBJECTS)]
    write_text(tmp_path / "mimic-iv" / "hosp" / "patients.csv", rows)
    rec = read_dataset("mimic_cxr", root, patients_file="../../mimic-iv/hosp/patients.csv")
    assert rec.images["sex"].tolist() == ["M", "F", "M", "F", "M"]
    # StudyDate 2180-05-06, anchor_year 2180 -> age = anchor_age
    assert rec.images["age"].tolist() == [50.0, 51.0, 52.0, 53.0, 50.0]
    with pytest.raises(DatasetFormatError, match="patients_file"):
        read_dataset("mimic_cxr", root, patients_file="nope.csv.gz")


def test_split_file_errors(tmp_path):
    studies, labels = _studies()
    root = write_mimic(tmp_path, studies, labels, extra_split_rows=["ghost,50000000,10000032,train"])
    with pytest.raises(DatasetFormatError, match="ghost"):
        read_dataset("mimic_cxr", root)
    root = write_mimic(tmp_path, studies, labels, extra_split_rows=[])
    text = (root / "mimic-cxr-2.0.0-split.csv.gz")
    import gzip
    lines = gzip.decompress(text.read_bytes()).decode().splitlines()
    write_text(text, lines[:-1], gz=True)
    with pytest.raises(DatasetFormatError, match="d9-noview"):
        read_dataset("mimic_cxr", root)
    write_text(text, [*lines[:-1], lines[-1].replace(",train", ",training")], gz=True)
    with pytest.raises(DatasetFormatError, match="'training'"):
        read_dataset("mimic_cxr", root)


def test_bad_label_value_names_file_row_column(tmp_path):
    studies, labels = _studies()
    labels[(SUBJECTS[1], 50000001)] = {"Pneumonia": "3.0"}
    with pytest.raises(DatasetFormatError, match=r"chexpert.csv.gz row 3 column 'Pneumonia'"):
        read_dataset("mimic_cxr", write_mimic(tmp_path, studies, labels))
