"""Every registered adapter has a synthetic fixture in its official layout, and inspect + prepare work on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import arkx
from arkx.cli import main
from arkx.data.adapters import adapter_names
from arkx.data.cache import open_cache
from arkx.data.io import load_resized
from arkx.data.loaders import prepare_images
from arkx.data.masks import decode_mask
from arkx.data.synth import WRITERS

#: options a user passes for the generic layouts' example data (the others need none)
OPTIONS = {"csv": dict(csv="labels.csv", patient_column="patient", split_column="split", sex_column="sex",
                       age_column="age", view_column="view")}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return arkx.synthesize(tmp_path_factory.mktemp("all"), seed=1, n=12, size=40, datasets=sorted(WRITERS))


def test_every_adapter_has_a_synthetic_writer():
    assert sorted(WRITERS) == adapter_names()


@pytest.mark.parametrize("name", adapter_names())
def test_inspect_and_prepare_every_layout(name, roots, tmp_path, capsys):
    records = arkx.read_dataset(name, roots[name], **OPTIONS.get(name, {}))
    assert len(records) >= 8
    assert set(records.images["split"]) <= {"train", "val", "test"}
    option_args = [a for k, v in OPTIONS.get(name, {}).items() for a in ("--option", f"{k}={v}")]
    assert main(["datasets", "inspect", str(roots[name]), "--type", name, "--json", *option_args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == len(records)
    if records.masks is not None:
        assert sum(summary["mask_pixels_per_class"].values()) > 0
        first = records.masks.iloc[0]
        assert decode_mask(first, records.root).any()
    images = prepare_images(records, tmp_path, 32, progress=False)
    assert not images.failures and len(images) == len(records)
    reopened = open_cache(images.folder)
    np.testing.assert_array_equal(reopened[0], load_resized(records.absolute_paths()[0], 32))
