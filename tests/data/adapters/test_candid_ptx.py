from __future__ import annotations

import numpy as np
import pytest

from arkx.data import masks as M
from arkx.data.adapters import read_dataset
from arkx.data.records import DatasetFormatError

from .conftest import write_dicom, write_text

SOP = ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"]


def write_candid(root, encoded=("5 2", "-1", "-1"), extensionless=False):
    lines = ["SOPInstanceUID,filename,EncodedPixels,Report"]
    for k, (sop, enc) in enumerate(zip(SOP, encoded)):
        lines.append(f'{sop},P{1 + k // 2}_20{k}_0.dcm,{enc},"Report {k}.\nComment: none."')
    write_text(root / "Pneumothorax_reports.csv", lines)
    for k, sop in enumerate(SOP):
        write_dicom(root / "dataset" / (sop if extensionless else f"{sop}.dcm"), sex="F", age="050Y")
    return root


@pytest.mark.parametrize("extensionless", [False, True])
def test_read_candid(tmp_path, extensionless):
    rec = read_dataset("candid_ptx", write_candid(tmp_path, extensionless=extensionless))
    assert rec.images["image_id"].tolist() == SOP
    assert rec.images["path"][0] == f"dataset/{SOP[0]}" + ("" if extensionless else ".dcm")
    assert rec.images["patient_id"].tolist() == ["P1", "P1", "P2"]
    assert rec.labels[:, 0].tolist() == [1, 0, 0] and rec.label_names == ("Pneumothorax",)
    mask = M.decode_mask(rec.masks.iloc[0], rec.root)
    assert np.argwhere(mask).tolist() == [[1, 1], [2, 1]]
    assert rec.boxes[["x_min", "y_min", "x_max", "y_max"]].values.tolist() == [[1, 1, 2, 3]]
    split = dict(zip(rec.images["image_id"], rec.images["split"]))
    assert split[SOP[0]] == split[SOP[1]]  # same patient, same split


def test_candid_absolute_rle_and_missing_column(tmp_path):
    rec = read_dataset("candid_ptx", write_candid(tmp_path, encoded=("6 2 13 2", "-1", "-1")))
    assert rec.masks["encoding"].tolist() == ["kaggle"]
    assert M.decode_mask(rec.masks.iloc[0], rec.root).sum() == 4
    write_text(tmp_path / "Pneumothorax_reports.csv", ["SOPInstanceUID,Mask", f"{SOP[0]},-1"])
    with pytest.raises(DatasetFormatError, match="EncodedPixels"):
        read_dataset("candid_ptx", tmp_path)


def test_candid_inconsistent_patient(tmp_path):
    root = write_candid(tmp_path)
    write_text(root / "Pneumothorax_reports.csv", ["SOPInstanceUID,filename,EncodedPixels",
                                                   f"{SOP[0]},P1_1.dcm,-1", f"{SOP[0]},P2_1.dcm,-1"])
    with pytest.raises(DatasetFormatError, match="patients P1 and P2"):
        read_dataset("candid_ptx", root)
