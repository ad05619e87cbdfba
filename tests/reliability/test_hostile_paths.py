"""Hostile and careless paths in providers' label files (issue 19 #6) and OS artefacts in image folders
(issue 19 #19).

A label file names images; it must not steer reads outside the dataset folder it describes. An absolute
path elsewhere or a ``..`` that climbs out is refused with one DatasetFormatError naming the file, the
row (or line / entry) and the path -- by one shared check, ``arkx.data.adapters._common.path_in_base``.
What stays accepted: the providers' own forms (CheXpert's ``CheXpert-v1.0-small/train/...`` and
``CheXpert-v1.0/train/...``), an absolute path that lies inside the dataset folder, images kept
elsewhere when the user names their folder explicitly (the generic CSV adapter's ``image_root``), and
symlinks placed inside the dataset folder (the check is lexical: see ``path_in_base``).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from arkx.data.adapters import read_dataset
from arkx.data.records import DatasetFormatError

from ..data.adapters.conftest import (touch, write_chexpert, write_mimic, write_nih14,
                                      write_rsna, write_text, write_vindr)
from ..data.adapters.test_chestdr import write_chestdr
from ..data.adapters.test_chestx_det import write_det
from ..data.adapters.test_chexmask import write_chexmask
from ..data.adapters.test_covidx import write_covidx
from ..data.adapters.test_cxr_lt import FPATH_HEADER, write_cxr_lt
from ..data.adapters.test_generic_coco import write_coco
from ..data.adapters.test_generic_csv import FULL as CSV_OPTIONS
from ..data.adapters.test_generic_csv import ROWS as CSV_ROWS
from ..data.adapters.test_node21 import write_node
from ..data.adapters.test_tbx11k import write_tbx


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def secret(tmp: Path) -> Path:
    """A file outside every dataset folder that a hostile label file tries to reach."""
    return touch(tmp / "outside" / "secret.png")


# ------------------------------------------------------------------------------------------ refused
# each case: (adapter, dataset root, options, label file, where in it, the hostile path as written)


def _chexpert_absolute(tmp):
    root = write_chexpert(tmp, n_train_patients=3)
    bad = str(secret(tmp))
    replace_in(root / "train.csv", "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg", bad)
    return "chexpert", root, {}, "train.csv", "row 4", bad


def _chexpert_dotdot(tmp):
    root = write_chexpert(tmp, n_train_patients=3)
    secret(tmp)
    bad = "CheXpert-v1.0-small/../outside/secret.png"  # after the shipped prefix is dropped: ../outside/...
    replace_in(root / "valid.csv", "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg", bad)
    return "chexpert", root, {}, "valid.csv", "row 3", "../outside/secret.png"


def _csv_absolute(tmp):
    root = tmp / "ds"
    bad = str(secret(tmp))
    write_text(root / "labels.csv", [CSV_ROWS[0], CSV_ROWS[1], CSV_ROWS[2].replace("a/2.png", bad)])
    return "csv", root, CSV_OPTIONS, "labels.csv", "row 3", bad


def _csv_dotdot(tmp):
    root = tmp / "ds"
    secret(tmp)
    bad = "a/../../outside/secret.png"
    write_text(root / "labels.csv", [CSV_ROWS[0], CSV_ROWS[1].replace("a/1.png", bad), CSV_ROWS[2]])
    return "csv", root, CSV_OPTIONS, "labels.csv", "row 2", bad


def _csv_dotdot_out_of_image_root(tmp):
    root = tmp / "ds"
    (root / "imgs").mkdir(parents=True)
    bad = "../labels.csv"  # inside the dataset folder, but outside the image_root the user named
    write_text(root / "labels.csv", [CSV_ROWS[0], CSV_ROWS[1].replace("a/1.png", bad)])
    return "csv", root, dict(CSV_OPTIONS, image_root="imgs"), "labels.csv", "row 2", bad


def _coco(tmp):
    root, _ = write_coco(tmp / "coco")
    secret(tmp)
    bad = "../../outside/secret.png"
    replace_in(root / "annotations" / "instances_val.json", '"b/y1.png"', json.dumps(bad))
    return "coco", root, {}, "instances_val.json", "images[0]", bad


def _covidx(tmp):
    root = write_covidx(tmp / "covidx", {"train": ["1 a.png positive src", "2 b.png negative src"],
                                         "test": ["3 c.png negative src"]})
    bad = str(secret(tmp))
    replace_in(root / "test.txt", "c.png", bad)
    return "covidx", root, {}, "test.txt", "line 1", bad


def _cxr_lt(tmp):
    root = write_cxr_lt(tmp / "lt", images=False)
    secret(tmp)
    bad = "files/../../outside/secret.png"
    rows = (root / "train.csv").read_text().splitlines()[1:]
    with_fpath = [",".join([*r.split(",")[:3], bad if i == 0 else "", *r.split(",")[3:]]) for i, r in enumerate(rows)]
    write_text(root / "train.csv", [FPATH_HEADER, *with_fpath])
    return "cxr_lt", root, {}, "train.csv", "row 2", bad


def _chexmask(tmp):
    bad = str(secret(tmp))
    root = write_chexmask(tmp, [f"{bad},0.9,0.9,,1 4,,,4,4"])
    return "chexmask", root, {}, "ChestX-Ray8.csv", "row 2", bad


def _chestdr(tmp):
    root = write_chestdr(tmp / "chest")
    secret(tmp)
    replace_in(root / "test_WithLabel.txt", "5E0E86BB348CB90.png", "../../outside/secret.png")
    return "chestdr", root, {}, "test_WithLabel.txt", "entry 1", "../../outside/secret.png"


def _chestx_det(tmp):
    (tmp / "det").mkdir()
    root = write_det(tmp / "det")
    secret(tmp)
    replace_in(root / "ChestX_Det_test.json", '"40000.png"', '"../../outside/secret.png"')
    return "chestx_det", root, {}, "ChestX_Det_test.json", "entry 0", "../../outside/secret.png"


def _tbx11k(tmp):
    root = write_tbx(tmp / "tbx")
    secret(tmp)
    replace_in(root / "annotations" / "json" / "TBX11K_val.json", '"tb/tb0003.png"', '"../../outside/secret.png"')
    return "tbx11k", root, {}, "TBX11K_val.json", "images[1]", "../../outside/secret.png"


def _node21(tmp):
    root = write_node(tmp / "node", ["n1.mha,1,1,2,2,1", "n2.mha,0,0,0,0,0"])
    replace_in(root / "cxr_images/proccessed_data/metadata.csv", "n2.mha", "../../../../outside/secret.mha")
    return "node21", root, {}, "metadata.csv", "row 3", "../../../../outside/secret.mha"


def _nih14(tmp):
    root = write_nih14(tmp / "nih")
    bad = "../outside/secret.png"
    for name in ("Data_Entry_2017_v2020.csv", "test_list.txt"):
        replace_in(root / name, "00000007_000.png", bad)
    return "nih14", root, {}, "Data_Entry_2017_v2020.csv", "row 11", bad


def _mimic(tmp):
    root = write_mimic(tmp / "mimic", [(10000032, 50414267, [("d1", "PA")], "train")], {})
    bad = "../../../../../outside/secret"
    for kind in ("metadata", "split"):
        path = root / f"mimic-cxr-2.0.0-{kind}.csv.gz"
        text = gzip.decompress(path.read_bytes()).decode().replace("d1,", f"{bad},", 1)
        path.write_bytes(gzip.compress(text.encode()))
    built = f"files/p10/p10000032/s50414267/{bad}.jpg"  # the path the ids make
    return "mimic_cxr", root, dict(views=None), "mimic-cxr-2.0.0-metadata.csv.gz", "row 2", built


def _rsna(tmp):
    root = write_rsna(tmp / "rsna", dicoms=False)
    bad = "../outside/secret"
    for name in ("stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"):
        replace_in(root / name, "p-normal", bad)
    return "rsna", root, dict(read_dicom_metadata=False), "stage_2_train_labels.csv", "row 2", bad + ".dcm"


def _vindr(tmp):
    root = write_vindr(tmp / "vindr", {"img1": [{"COPD": 1}] * 3}, {"t1": {"No finding": 1}}, dicoms=False)
    bad = "../outside/secret"
    replace_in(root / "annotations" / "image_labels_test.csv", "t1,", f"{bad},")
    return "vindr_cxr", root, dict(read_dicom_metadata=False), "image_labels_test.csv", "row 2", bad + ".dicom"


REFUSED = [_chexpert_absolute, _chexpert_dotdot, _csv_absolute, _csv_dotdot, _csv_dotdot_out_of_image_root, _coco,
           _covidx, _cxr_lt, _chexmask, _chestdr, _chestx_det, _tbx11k, _node21, _nih14, _mimic, _rsna, _vindr]


@pytest.mark.parametrize("case", REFUSED, ids=[c.__name__.lstrip("_") for c in REFUSED])
def test_label_file_path_outside_the_dataset_is_refused(case, tmp_path):
    name, root, options, source, where, bad = case(tmp_path)
    pattern = rf"{re.escape(source)} {re.escape(where)} column .*{re.escape(repr(bad))} points outside"
    with pytest.raises(DatasetFormatError, match=pattern):
        read_dataset(name, root, **options)


# ------------------------------------------------------------------------------------------ accepted


@pytest.mark.parametrize("prefix", ["CheXpert-v1.0-small", "CheXpert-v1.0"])
def test_chexpert_shipped_prefixes_resolve_inside_root(prefix, tmp_path):
    """The official CSVs' paths begin with the shipped folder name (small or full release)."""
    rec = read_dataset("chexpert", write_chexpert(tmp_path, prefix=prefix, n_train_patients=3))
    assert rec.images["path"][0] == "train/patient00001/study1/view1_frontal.jpg"
    assert all(p.is_file() for p in rec.absolute_paths())


def test_absolute_path_inside_the_dataset_is_accepted(tmp_path):
    root = write_chexpert(tmp_path, n_train_patients=3)
    inside = root / "train/patient00002/study1/view1_frontal.jpg"
    replace_in(root / "train.csv", "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg", str(inside))
    rec = read_dataset("chexpert", root)
    assert "train/patient00002/study1/view1_frontal.jpg" in set(rec.images["path"])
    assert all(p.is_file() for p in rec.absolute_paths())


def test_images_elsewhere_need_the_explicit_image_root(tmp_path):
    """Absolute paths to a folder outside the dataset: refused by default, read once ``image_root`` names it."""
    images = tmp_path / "hospital" / "images"
    rows = [CSV_ROWS[0]] + [line.replace("a/", f"{images}/a/").replace("b/", f"{images}/b/").replace(
        "c/", f"{images}/c/") for line in CSV_ROWS[1:]]
    root = tmp_path / "ds"
    write_text(root / "labels.csv", rows)
    for line in rows[1:]:
        touch(Path(line.split(",")[0]))
    with pytest.raises(DatasetFormatError, match="points outside"):
        read_dataset("csv", root, **CSV_OPTIONS)
    rec = read_dataset("csv", root, **CSV_OPTIONS, image_root=str(images))
    assert rec.images["image_id"].tolist()[:2] == ["a/1.png", "a/2.png"]
    assert all(p.is_file() and p.is_relative_to(images) for p in rec.absolute_paths())


def test_symlink_inside_the_dataset_is_followed(tmp_path):
    """The check is lexical: a symlink that the dataset's owner put in the folder (``train -> /big/disk``)
    is trusted, only the label file's own ``..`` / absolute paths are refused."""
    real = write_chexpert(tmp_path / "disk", n_train_patients=3)
    root = tmp_path / "ds" / "CheXpert-v1.0-small"
    root.mkdir(parents=True)
    for name in ("train.csv", "valid.csv", "valid"):
        (root / name).symlink_to(real / name)
    (root / "train").symlink_to(real / "train", target_is_directory=True)
    rec = read_dataset("chexpert", root)
    assert len(rec) == 8 and all(p.is_file() for p in rec.absolute_paths())


# ------------------------------------------------------------------------------------------ OS artefacts


def _appledouble(folder: Path) -> None:
    """What macOS leaves when it copies a folder to a non-Mac disk, and what Windows adds."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        (path.parent / f"._{path.name}").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        (sub / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (sub / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")


def _shenzhen(tmp):
    from ..data.adapters.test_shenzhen import write_shenzhen

    return "shenzhen", write_shenzhen(tmp, {"CHNCXR_0001_0": "male 35yrs", "CHNCXR_0002_1": "female 40yrs"}), {}


def _montgomery(tmp):
    from ..data.adapters.test_montgomery import write_montgomery

    return "montgomery", write_montgomery(tmp, {"MCUCXR_0001_0": "Patient's Sex: M\nPatient's Age: 045Y",
                                                "MCUCXR_0002_1": None}), {}


def _jsrt(tmp):
    from ..data.adapters.test_jsrt import write_jsrt

    return "jsrt", write_jsrt(tmp), {}


def _pediatric(tmp):
    from ..data.adapters.test_pediatric_pneumonia import KAGGLE, write_tree

    write_tree(tmp / "chest_xray", KAGGLE)
    return "pediatric_pneumonia", tmp, {}


def _vindr_ribcxr(tmp):
    from ..data.adapters.test_vindr_ribcxr import write_split

    write_split(tmp, "train", 4)
    write_split(tmp, "val", 2)
    return "vindr_ribcxr", tmp, {}


def _mask_folder(tmp):
    import numpy as np
    from PIL import Image

    for stem in ("a", "b"):
        for folder in ("images", "masks/lung"):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp / folder / f"{stem}.png")
    return "mask_folder", tmp, {}


def _chexmask_folder(tmp):
    return "chexmask", write_chexmask(tmp, ["00000001_000.png,0.9,0.9,,1 4,1 4,1 4,4,4"]), {}


ARTEFACT_CASES = [_shenzhen, _montgomery, _jsrt, _pediatric, _vindr_ribcxr, _mask_folder, _chexmask_folder]


@pytest.mark.parametrize("case", ARTEFACT_CASES, ids=[c.__name__.lstrip("_") for c in ARTEFACT_CASES])
def test_os_artefacts_do_not_refuse_a_dataset(case, tmp_path):
    """Issue 19 #19: ``._NAME.png`` AppleDouble files, ``.DS_Store`` and ``Thumbs.db`` in every folder of the
    adapters that scan folders: the same records as without them (no refusal, no extra image)."""
    name, root, options = case(tmp_path / "clean")
    clean = read_dataset(name, root, **options)
    _appledouble(root)
    dirty = read_dataset(name, root, **options)
    assert dirty.images["path"].tolist() == clean.images["path"].tolist()
    assert (dirty.masks is None) == (clean.masks is None)
    if clean.masks is not None:
        assert len(dirty.masks) == len(clean.masks)
