"""Synthetic writers of the classification layouts: each writer's output is read by its adapter, in the
provider's layout, deterministically, with patient-disjoint splits and positives in every split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arkx.data.adapters import check_images_exist, read_dataset
from arkx.data.adapters.chestdr import CHESTDR_LABELS
from arkx.data.adapters.cxr_lt import CXR_LT_2023_LABELS
from arkx.synth import WRITERS, synthesize
from arkx.synth.anatomy import CONCEPTS
from arkx.synth.providers import LABEL_CONCEPTS as _CONCEPTS
from arkx.synth.providers.chestdr import CHESTDR_LABELS as SYNTH_CHESTDR
from arkx.synth.providers.cxr_lt import CXR_LT_LABELS

N, SIZE = 120, 64
NAMES = ("cxr_lt", "covidx", "pediatric_pneumonia", "chestdr", "csv", "folder")
OPTIONS = {
    "csv": dict(csv="labels.csv", patient_column="patient", split_column="split", sex_column="sex",
                age_column="age", view_column="view"),
    "folder": dict(patient_regex=r"^(P\d+)_"),
}
ROOTS = {
    "cxr_lt": "cxr_lt/cxr-lt-2023", "covidx": "covidx", "pediatric_pneumonia": "pediatric_pneumonia/chest_xray",
    "chestdr": "chestdr/MedFMC/chest", "csv": "csv/my_csv_dataset", "folder": "folder/my_folder_dataset",
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_cls")
    return out, synthesize(out, seed=0, n=N, size=SIZE, datasets=NAMES)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_writers_registered_and_roots(synth):
    out, roots = synth
    assert set(NAMES) <= set(WRITERS)
    assert {k: v.relative_to(out).as_posix() for k, v in roots.items()} == ROOTS


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(synth, name):
    _, roots = synth
    rec = read_dataset(name, roots[name], **OPTIONS.get(name, {}))
    assert 0.9 * N <= len(rec) <= N + 3
    check_images_exist(rec)
    assert set(rec.images["split"]) == {"train", "val", "test"}
    assert (rec.images.groupby("patient_id")["split"].nunique() == 1).all(), "patients cross splits"
    for split in ("train", "test"):  # every output has positives in the evaluated splits
        sub = rec.split(split)
        assert ((sub.labels == 1).sum(axis=0) >= 1).all(), (split, rec.label_names)
    if rec.task.kind == "multiclass":
        assert (rec.labels.sum(axis=1) == 1).all()
    img = Image.open(rec.absolute_paths()[0])
    assert img.size == (SIZE, SIZE) and img.mode == "L"


def test_label_tables(synth):
    _, roots = synth
    assert CXR_LT_LABELS == CXR_LT_2023_LABELS and SYNTH_CHESTDR == CHESTDR_LABELS
    assert read_dataset("cxr_lt", roots["cxr_lt"]).label_names == CXR_LT_2023_LABELS
    assert read_dataset("chestdr", roots["chestdr"]).label_names == CHESTDR_LABELS
    for table in _CONCEPTS.values():
        assert all(c in CONCEPTS for options in table.values() for c in options)
    assert set(_CONCEPTS["chestdr"]) == set(CHESTDR_LABELS)
    assert set(_CONCEPTS["cxr_lt"]) == set(CXR_LT_LABELS) - {"No Finding"}


def test_provider_file_names(synth):
    _, roots = synth
    ped = read_dataset("pediatric_pneumonia", roots["pediatric_pneumonia"], task="3class")
    assert ped.label_names == ("Normal", "Bacterial pneumonia", "Viral pneumonia")
    assert (ped.split("train").labels.sum(axis=0) > 0).all()
    names = [Path(p).name for p in ped.images["path"]]
    assert any(n.startswith("person") and "_bacteria_" in n for n in names)
    assert any(n.startswith("IM-") for n in names) and all(n.endswith(".jpeg") for n in names)
    line = (roots["covidx"] / "train.txt").read_text().splitlines()[0].split()
    assert len(line) == 4 and line[2] in ("positive", "negative")
    first = (roots["chestdr"] / "trainval.txt").read_text().splitlines()[0].split()
    assert first[0].endswith(".png") and len(first[1].split(",")) == 19
    header = (roots["cxr_lt"] / "train.csv").read_text().splitlines()[0]
    assert header.startswith("dicom_id,subject_id,study_id,fpath,Atelectasis,Calcification of the Aorta")


def test_findings_are_drawn(synth):
    """A positive image differs from the normal look: pneumonia patients' lungs are denser on average."""
    _, roots = synth
    rec = read_dataset("covidx", roots["covidx"])
    mean = np.array([np.asarray(Image.open(p), dtype=float)[16:48, 8:56].mean() for p in rec.absolute_paths()])
    pos = rec.labels[:, 0] == 1
    se = np.sqrt(mean[pos].var() / pos.sum() + mean[~pos].var() / (~pos).sum())
    assert mean[pos].mean() - mean[~pos].mean() > 2.5 * se  # not a chance difference


def test_deterministic(synth, tmp_path):
    out, roots = synth
    again = synthesize(tmp_path, seed=0, n=N, size=SIZE, datasets=("chestdr", "pediatric_pneumonia"))
    for name, root in again.items():
        assert _digest(root) == _digest(roots[name])
    other = synthesize(tmp_path / "s1", seed=1, n=N, size=SIZE, datasets=("chestdr",))
    assert _digest(other["chestdr"]) != _digest(roots["chestdr"])
