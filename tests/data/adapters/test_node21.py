from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import read_dataset
from arkx.data.mha import read_mha, write_mha
from arkx.data.records import DatasetFormatError

from .conftest import write_text

DATA = "cxr_images/proccessed_data"


def write_node(root, rows):
    write_text(root / DATA / "metadata.csv", ["img_name,x,y,width,height,label", *rows])
    for name in dict.fromkeys(r.split(",")[0] for r in rows):
        write_mha(root / DATA / "images" / name, np.full((8, 6), 7, np.uint16))
    return root


def test_boxes_labels_and_mha(tmp_path):
    rows = ["n1.mha,10,20,30,40,1", "n1.mha,50,60,5,6,1", "c2.mha,0,0,0,0,0", "n3.mha,1,2,3,4,1"]
    rec = read_dataset("node21", write_node(tmp_path, rows))
    assert rec.images["image_id"].tolist() == ["n1.mha", "c2.mha", "n3.mha"]
    assert rec.images["path"][0] == f"{DATA}/images/n1.mha"
    assert rec.labels[:, 0].tolist() == [1, 0, 1] and rec.label_names == ("Nodule",)
    assert rec.boxes[["x_min", "y_min", "x_max", "y_max"]].values.tolist() == [[10, 20, 40, 60], [50, 60, 55, 66],
                                                                               [1, 2, 4, 6]]
    assert read_mha(rec.root / rec.images["path"][0]).shape == (8, 6)


def test_index_column_and_errors(tmp_path):
    write_text(tmp_path / DATA / "metadata.csv", [",img_name,x,y,width,height,label", "0,a.mha,1,1,2,2,1",
                                                  "1,b.mha,0,0,0,0,0"])
    rec = read_dataset("node21", tmp_path)
    assert rec.images["image_id"].tolist() == ["a.mha", "b.mha"] and len(rec.boxes) == 1
    write_text(tmp_path / DATA / "metadata.csv", ["img_name,x,y,width,height,label", "a.mha,1,1,0,2,1"])
    with pytest.raises(DatasetFormatError, match=r"row 2 \(a.mha\)"):
        read_dataset("node21", tmp_path)
    write_text(tmp_path / DATA / "metadata.csv", ["img_name,x,y,width,height,label", "a.mha,1,1,1,2,2"])
    with pytest.raises(DatasetFormatError, match="column 'label'"):
        read_dataset("node21", tmp_path)
    (tmp_path / DATA / "metadata.csv").unlink()
    with pytest.raises(DatasetFormatError, match="metadata.csv"):
        read_dataset("node21", tmp_path)
