"""Providers' files as they are shipped across releases and mirrors (issue 12 §4), and each adapter's
declared uncertain-label default (issue 12 §3).

Rule: metadata training does not need (sex, age, view) that is missing, renamed or empty is one warning
naming the file and the column, and "unknown"; labels, ids and paths stay strict. Encoding-level
variants (BOM, CRLF, header spaces, trailing commas, OS artefacts) are swept over every adapter in
``tests/data/test_every_layout.py``.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest

from arkx.config import DatasetConfig, config_from_dict
from arkx.data import loaders
from arkx.data.adapters import default_uncertain, read_dataset
from arkx.data.adapters._common import read_csv
from arkx.data.adapters.siim_acr import read_rle_table
from arkx.data.records import DatasetFormatError

from .conftest import (CHEXPERT_HEADER, XRV_DATA, touch, write_chexpert, write_mimic, write_nih14,
                       write_text)
from .test_vindr_ribcxr import RIBS, png, square


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "arkx.data" and r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------------ NIH ChestX-ray14


@pytest.mark.parametrize("column", ["Patient Sex", "Patient Gender"])
def test_nih_sex_column_under_either_name(column, tmp_path):
    """NIH's own Data_Entry_2017_v2020.csv says "Patient Sex"; the TorchXRayVision / Kaggle copy "Patient Gender"."""
    root = write_nih14(tmp_path)
    path = root / "Data_Entry_2017_v2020.csv"
    path.write_text(path.read_text().replace("Patient Gender", column))
    rec = read_dataset("nih14", root)
    assert rec.images["sex"].tolist()[:3] == ["M", "M", "F"]


@pytest.mark.parametrize("drop", ["Patient Gender", "Patient Age", "View Position"])
def test_nih_missing_metadata_column_is_a_warning(drop, tmp_path, caplog):
    root = write_nih14(tmp_path)
    path = root / "Data_Entry_2017_v2020.csv"
    lines = path.read_text().splitlines()
    j = lines[0].split(",").index(drop)
    path.write_text("\n".join(",".join(c for k, c in enumerate(line.split(",")) if k != j) for line in lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        rec = read_dataset("nih14", root)
    field = {"Patient Gender": "sex", "Patient Age": "age", "View Position": "view"}[drop]
    values = rec.images[field]
    assert values.isna().all() and len(rec) == 10
    assert any("Data_Entry_2017_v2020.csv" in m and f"no {field} column" in m for m in _warnings(caplog))


def test_nih_empty_metadata_column_is_a_warning(tmp_path, caplog):
    root = write_nih14(tmp_path)
    path = root / "Data_Entry_2017_v2020.csv"
    lines = path.read_text().splitlines()
    j = lines[0].split(",").index("View Position")
    rows = [",".join("" if k == j else c for k, c in enumerate(line.split(","))) for line in lines[1:]]
    path.write_text("\n".join([lines[0], *rows]) + "\n")
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        rec = read_dataset("nih14", root)
    assert rec.images["view"].isna().all()
    assert any("'View Position' (view) is empty" in m for m in _warnings(caplog))


def test_nih_labels_and_ids_stay_strict(tmp_path):
    root = write_nih14(tmp_path)
    path = root / "Data_Entry_2017_v2020.csv"
    path.write_text(path.read_text().replace("Finding Labels", "Findings"))
    with pytest.raises(DatasetFormatError, match=r"Data_Entry_2017_v2020\.csv lacks column\(s\) \['Finding Labels'\]"):
        read_dataset("nih14", root)


def test_nih_image_folder_and_extension_case(tmp_path):
    """``Images_001/`` and ``.PNG`` on disk for the ``.png`` names of Data_Entry (a mirror's case)."""
    root = write_nih14(tmp_path)
    for folder in sorted(root.glob("images_*")):
        for f in folder.glob("images/*.png"):
            f.rename(f.with_suffix(".PNG"))
        folder.rename(root / folder.name.capitalize())
    rec = read_dataset("nih14", root)
    assert rec.images["path"][0] == "Images_001/images/00000001_000.PNG"
    assert all(p.is_file() for p in rec.absolute_paths())


# ------------------------------------------------------------------------------------------ CheXpert


@pytest.mark.parametrize("drop", ["Sex", "Age", "Frontal/Lateral", "AP/PA"])
def test_chexpert_missing_metadata_column_is_a_warning(drop, tmp_path, caplog):
    """The CheXpert test CSVs on Stanford AIMI ship without Sex / Age: unknown, not a refusal."""
    root = write_chexpert(tmp_path, n_train_patients=3)
    j = CHEXPERT_HEADER.split(",").index(drop)
    for name in ("train.csv", "valid.csv"):
        lines = (root / name).read_text().splitlines()
        (root / name).write_text("\n".join(",".join(c for k, c in enumerate(line.split(",")) if k != j)
                                           for line in lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        rec = read_dataset("chexpert", root)
    assert len(rec) == 8
    if drop == "Sex":
        assert rec.images["sex"].isna().all()
    if drop == "Age":
        assert rec.images["age"].isna().all()
    if drop == "AP/PA":
        assert rec.images["view"].tolist()[:2] == [None, "LATERAL"]
    assert any("train.csv" in m and repr(drop) in m or f"['{drop}']" in m for m in _warnings(caplog))


def test_view_filter_without_any_view_is_refused_with_guidance(tmp_path):
    root = write_chexpert(tmp_path, n_train_patients=3)
    for name in ("train.csv", "valid.csv"):
        text = (root / name).read_text()
        (root / name).write_text(text.replace("Frontal/Lateral,AP/PA", "FL,APPA"))
    assert len(read_dataset("chexpert", root)) == 8  # no filter: read, views unknown
    with pytest.raises(DatasetFormatError, match="views=.*cannot be applied.*set views to null"):
        read_dataset("chexpert", root, views=["PA"])


# ------------------------------------------------------------------------------------------ MIMIC-CXR-JPG

STUDIES = [(10000032, 50414267, [("d1", "PA"), ("d2", "LATERAL")], "train"),
           (10000764, 57375967, [("d3", "AP")], "test")]


def test_mimic_2_1_0_folder(tmp_path):
    """2.1.0 ships the same mimic-cxr-2.0.0-* files plus mimic-cxr-2.1.0-test-set-labeled.csv (ignored)."""
    root = write_mimic(tmp_path / "mimic-cxr-jpg" / "2.1.0", STUDIES, {(10000032, 50414267): {"Edema": "1.0"}})
    write_text(root / "mimic-cxr-2.1.0-test-set-labeled.csv", ["study_id,Airspace Opacity", "57375967,1"])
    rec = read_dataset("mimic_cxr", root)
    assert rec.images["image_id"].tolist() == ["d1", "d3"]


def test_mimic_without_view_column(tmp_path, caplog):
    root = write_mimic(tmp_path, STUDIES, {}, gz=False)
    meta = root / "mimic-cxr-2.0.0-metadata.csv"
    lines = meta.read_text().splitlines()
    j = lines[0].split(",").index("ViewPosition")
    meta.write_text("\n".join(",".join(c for k, c in enumerate(line.split(",")) if k != j) for line in lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        rec = read_dataset("mimic_cxr", root, views=None)
    assert len(rec) == 3 and rec.images["view"].isna().all()
    assert any("mimic-cxr-2.0.0-metadata.csv" in m and "no view column" in m for m in _warnings(caplog))
    with pytest.raises(DatasetFormatError, match="set views to null"):
        read_dataset("mimic_cxr", root)  # the default frontal filter cannot be applied


def test_mimic_patients_table_without_gender(tmp_path, caplog):
    root = write_mimic(tmp_path, STUDIES, {})
    write_text(tmp_path / "patients.csv", ["subject_id,anchor_age,anchor_year", "10000032,52,2180", "10000764,60,2130"])
    with caplog.at_level(logging.WARNING, logger="arkx.data"):
        rec = read_dataset("mimic_cxr", root, patients_file=str(tmp_path / "patients.csv"))
    assert rec.images["sex"].isna().all() and rec.images["age"].notna().all()
    assert any("patients.csv" in m and "no sex column" in m for m in _warnings(caplog))


# ------------------------------------------------------------------------------------------ SIIM-ACR


@pytest.mark.skipif(not (XRV_DATA / "siim-pneumothorax-train-rle.csv.gz").is_file(),
                    reason="torchxrayvision label files absent")
def test_siim_stage1_header_with_leading_space_real_file():
    """The real stage-1 ``train-rle.csv`` header is ``ImageId, EncodedPixels`` (stage 2: no space)."""
    frame = read_rle_table(XRV_DATA / "siim-pneumothorax-train-rle.csv.gz", "siim_acr", "ImageId", "EncodedPixels")
    assert len(frame) > 10_000 and (frame["EncodedPixels"].str.strip() == "-1").any()


# ------------------------------------------------------------------------------------------ VinDr-RibCXR


def test_vindr_ribcxr_absent_rib_marked_with_the_string_none(tmp_path):
    """The provider's JSON writes ``"None"`` (a string) for an absent rib: no mask for that rib."""
    table = {"img": {}} | {r: {} for r in RIBS}
    for split, n in (("train", 3), ("val", 1)):
        table = {"img": {}} | {r: {} for r in RIBS}
        for j in range(n):
            name = f"VinDr_RibCXR_{split}_{j:03d}.png"
            png(tmp_path / "data" / split / "img" / name)  # lower-case data/ as in the JSON's paths
            table["img"][str(j)] = f"data/{split}/img/{name}"
            for k, r in enumerate(RIBS):
                table[r][str(j)] = "None" if (split, j, r) == ("train", 0, "L10") else square(k, j)
        (tmp_path / "data" / split / f"Vindr_RibCXR_{split}_mask.json").write_text(json.dumps(table))
    rec = read_dataset("vindr_ribcxr", tmp_path)
    first = rec.masks[rec.masks["image_id"] == "VinDr_RibCXR_train_000"]
    assert len(first) == 19 and "L10" not in set(first["label"])
    assert rec.notes["ribs_missing_or_empty"] == 1 and len(rec.masks) == 4 * 20 - 1


# ------------------------------------------------------------------------------------------ shared reading


def test_row_longer_than_the_header_is_refused(tmp_path):
    path = write_text(tmp_path / "x.csv", ["a,b", "1,2", "3,4,5"])
    with pytest.raises(DatasetFormatError, match=r"x\.csv: row 3 has 3 fields but the header has 2"):
        read_csv(path, "test")


@pytest.mark.parametrize("name", ["CXR_png", "cxr_png", "CXR_PNG"])
def test_shenzhen_folder_and_extension_case(name, tmp_path):
    root = tmp_path / "ChinaSet_AllFiles"
    touch(root / name / "CHNCXR_0001_0.PNG")
    touch(root / name / "CHNCXR_0002_1.png")
    rec = read_dataset("shenzhen", root)
    assert rec.images["path"].tolist() == [f"{name}/CHNCXR_0001_0.PNG", f"{name}/CHNCXR_0002_1.png"]
    assert all(p.is_file() for p in rec.absolute_paths())


def test_montgomery_mask_extension_case(tmp_path):
    root = tmp_path / "MontgomerySet"
    touch(root / "CXR_png" / "MCUCXR_0001_0.png")
    touch(root / "ManualMask" / "leftMask" / "MCUCXR_0001_0.PNG")
    touch(root / "ManualMask" / "rightMask" / "MCUCXR_0001_0.png")
    rec = read_dataset("montgomery", root)
    assert sorted(rec.masks["path"]) == ["ManualMask/leftMask/MCUCXR_0001_0.PNG",
                                         "ManualMask/rightMask/MCUCXR_0001_0.png"]


# ------------------------------------------------------------------------------------------ uncertain default


def test_each_adapter_declares_its_uncertain_default():
    assert default_uncertain("chexpert") == "lsr-ones"  # METHOD.md: CheXpert uncertain -> LSR-ones
    assert default_uncertain("mimic_cxr") == "ones"  # METHOD.md: MIMIC uncertain -> ones
    assert default_uncertain("nih14") == "ones"


@pytest.mark.parametrize("given,expected", [(None, "lsr-ones"), ("ones", "ones"), ("zeros", "zeros")])
def test_config_resolves_the_adapter_default_and_explicit_wins(given, expected, tmp_path):
    entry = dict(type="chexpert", root=str(tmp_path)) | ({} if given is None else dict(uncertain=given))
    assert DatasetConfig(**entry).uncertain == expected
    written = config_from_dict(dict(datasets=[entry])).to_yaml()  # what a run writes to its config.yaml
    assert f"uncertain: {expected}" in written


@pytest.mark.parametrize("given,expected", [(None, "lsr-ones"), ("ignore", "ignore")])
def test_prepare_dataset_resolves_an_unset_policy(given, expected, tmp_path, monkeypatch):
    """``prepare_dataset`` resolves ``uncertain=None`` itself (a config built without validation)."""
    root = write_chexpert(tmp_path, n_train_patients=3)
    ds_cfg = DatasetConfig.model_construct(type="chexpert", root=root, name=None, options={}, uncertain=given,
                                           lsr_ones_range=(0.55, 0.85), lsr_zeros_range=(0.0, 0.3),
                                           max_train_images=None)
    fake = SimpleNamespace(failures=[], ok=np.ones(8, bool))
    monkeypatch.setattr(loaders, "prepare_images", lambda *a, **k: fake)
    data_cfg = SimpleNamespace(resolved_cache_size=16, prepare_workers=0, fail_fraction=0.05)
    prepared = loaders.prepare_dataset(ds_cfg, data_cfg, tmp_path / "cache", progress=False)
    assert prepared.uncertain == expected


def test_trailing_comma_on_some_rows_only_is_accepted(tmp_path):
    path = write_text(tmp_path / "x.csv", ["a,b", "1,2", "3,4,", "5,6"])
    assert read_csv(path, "test").to_dict("list") == {"a": [1, 3, 5], "b": [2, 4, 6]}


def test_inspect_reports_the_uncertain_default(tmp_path):
    from arkx.data.summary import format_summary, summarize

    summary = summarize(read_dataset("chexpert", write_chexpert(tmp_path, n_train_patients=3)))
    assert summary["uncertain_default"] == "lsr-ones"
    assert "trained as 'lsr-ones'" in format_summary(summary)


def test_pediatric_folder_case(tmp_path):
    """``Train/normal/`` on a case-preserving copy of ``train/NORMAL/``: same images, same labels."""
    for part, cls, name in (("Train", "normal", "IM-0115-0001.jpeg"), ("Train", "Pneumonia", "person1_virus_6.jpeg"),
                            ("TEST", "NORMAL", "IM-0001-0001.jpeg"), ("TEST", "PNEUMONIA", "person3_bacteria_1.jpeg")):
        touch(tmp_path / "chest_xray" / part / cls / name)
    rec = read_dataset("pediatric_pneumonia", tmp_path)
    assert rec.labels[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert (rec.images["split"] == "test").sum() == 2 and all(p.is_file() for p in rec.absolute_paths())
