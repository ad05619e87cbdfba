from __future__ import annotations

import numpy as np
import pytest

from arkx.data.adapters import check_images_exist, read_dataset
from arkx.data.adapters.chestdr import CHESTDR_LABELS
from arkx.data.records import DatasetFormatError

from .conftest import touch, write_text


def onehot(*names: str) -> str:
    return ",".join("1" if label in names else "0" for label in CHESTDR_LABELS)


TRAINVAL = [f"5B91F7409CCCE2.png {onehot('pleural_effusion', 'TB')}",
            f"5DC2824164E8B52.png {onehot()}",
            f"01D3FE86D742A44F.png {onehot('consolidation', 'elevated_diaphragm')}"]
TEST = [f"5E0E86BB348CB90.png {onehot('hilar_enlargement')}"]


def write_chestdr(root, trainval=TRAINVAL, test=TEST, images=True):
    write_text(root / "trainval.txt", trainval)
    if test is not None:
        write_text(root / "test_WithLabel.txt", test)
    write_text(root / "test_WithoutLabel.txt", ["5AAAAAAAAAAAAA.png"])  # challenge set, ignored
    if images:
        for line in trainval + (test or []):
            touch(root / "images" / line.split()[0])
    return root


def test_lists_labels_and_splits(tmp_path):
    rec = read_dataset("chestdr", write_chestdr(tmp_path))
    assert rec.label_names == CHESTDR_LABELS and len(CHESTDR_LABELS) == 19
    assert rec.images["image_id"].tolist() == ["5B91F7409CCCE2", "5DC2824164E8B52", "01D3FE86D742A44F",
                                               "5E0E86BB348CB90"]
    assert rec.images["path"][0] == "images/5B91F7409CCCE2.png"
    col = {n: j for j, n in enumerate(CHESTDR_LABELS)}
    assert rec.labels[0, col["pleural_effusion"]] == 1 and rec.labels[0, col["TB"]] == 1 and rec.labels[0].sum() == 2
    assert rec.labels[1].sum() == 0 and not np.isnan(rec.labels).any()
    assert rec.labels[2, col["elevated_diaphragm"]] == 1 and rec.labels[3, col["hilar_enlargement"]] == 1
    assert rec.images["split"][3] == "test" and set(rec.images["split"][:3]) <= {"train", "val"}
    assert rec.split_source == "official"
    check_images_exist(rec)


def test_val_carved_from_trainval(tmp_path):
    trainval = [f"5{i:013X}.png {onehot('nodule' if i % 2 else 'TB')}" for i in range(300)]
    rec = read_dataset("chestdr", write_chestdr(tmp_path, trainval=trainval, images=False), val_fraction=0.2)
    counts = rec.images["split"].value_counts()
    assert counts["test"] == 1 and 30 <= counts["val"] <= 90 and counts["train"] + counts["val"] == 300
    other = read_dataset("chestdr", tmp_path, val_fraction=0.2, split_seed=3)
    assert other.images["split"].tolist() != rec.images["split"].tolist()


def test_without_test_list_seeded_split(tmp_path):
    trainval = [f"5{i:013X}.png {onehot('nodule')}" for i in range(100)]
    rec = read_dataset("chestdr", write_chestdr(tmp_path, trainval=trainval, test=None, images=False))
    assert rec.split_source == "seeded-patient" and set(rec.images["split"]) == {"train", "val", "test"}


def test_csv_variant(tmp_path):
    header = "img_id," + ",".join(CHESTDR_LABELS[::-1])  # columns picked by name, not position
    values = ["0"] * 19
    values[0] = "1"  # reversed order: the first column is "consolidation"
    write_text(tmp_path / "chestdr_train.csv", [header, "5ABC," + ",".join(values), "5ABD," + ",".join(["0"] * 19)])
    rec = read_dataset("chestdr", tmp_path)
    assert rec.images["path"].tolist() == ["images/5ABC.png", "images/5ABD.png"]
    assert rec.labels[0, CHESTDR_LABELS.index("consolidation")] == 1 and rec.labels[0].sum() == 1
    values[5] = "2"
    write_text(tmp_path / "chestdr_train.csv", [header, "5ABC," + ",".join(values)])
    with pytest.raises(DatasetFormatError, match=rf"chestdr_train.csv row 2 column '{CHESTDR_LABELS[::-1][5]}'"):
        read_dataset("chestdr", tmp_path)


def test_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="trainval.txt"):
        read_dataset("chestdr", tmp_path)
    root = write_chestdr(tmp_path / "a", trainval=TRAINVAL + ["5FFF.png 0,1,0"], images=False)
    with pytest.raises(DatasetFormatError, match=r"trainval.txt line 4: expected 19 comma-separated"):
        read_dataset("chestdr", root)
    root = write_chestdr(tmp_path / "b", test=[TRAINVAL[0]], images=False)
    with pytest.raises(DatasetFormatError, match=r"test_WithLabel.txt entry 1: image '5B91F7409CCCE2.png' also listed"):
        read_dataset("chestdr", root)
    root = write_chestdr(tmp_path / "c", trainval=["5AB.png"], images=False)
    with pytest.raises(DatasetFormatError, match=r"trainval.txt line 1"):
        read_dataset("chestdr", root)
