from __future__ import annotations

import math

import pytest

from arkx.data.adapters import adapter_names, check_images_exist, get_adapter, read_dataset
from arkx.data.adapters._common import parse_age
from arkx.data.records import DatasetFormatError

from .conftest import write_chexpert


def test_six_adapters_registered_with_layouts():
    names = {"chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen", "mimic_cxr"}
    assert names <= set(adapter_names())
    for name in names:
        spec = get_adapter(name)
        assert spec.layout.count("\n") >= 2 and spec.summary


def test_unknown_option_rejected(tmp_path):
    with pytest.raises(ValueError, match="reader_aggregation"):
        read_dataset("rsna", tmp_path, reader_aggregation="any")
    with pytest.raises(ValueError, match="labeler"):
        read_dataset("mimic_cxr", tmp_path, labeler="manual")


def test_check_images_exist(tmp_path):
    root = write_chexpert(tmp_path, n_train_patients=8)
    rec = read_dataset("chexpert", root)
    check_images_exist(rec)  # all present
    for p in rec.absolute_paths()[:7]:
        p.unlink()
    with pytest.raises(DatasetFormatError, match=r"7 of 18 image files are missing.*patient00001.*and 2 more"):
        check_images_exist(rec)


@pytest.mark.parametrize("raw,years", [(57, 57.0), ("045Y", 45.0), ("006M", 0.5), ("51", 51.0), ("", None),
                                       (None, None), ("abc", None), ("-3", None)])
def test_parse_age(raw, years):
    got = parse_age(raw)
    assert math.isnan(got) if years is None else got == years
