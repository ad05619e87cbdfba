"""Every registered adapter has a synthetic fixture in its official layout, and inspect + prepare work on it."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import arkx
from arkx.cli import main
from arkx.data.adapters import adapter_names
from arkx.data.cache import open_cache
from arkx.data.io import load_resized
from arkx.data.loaders import prepare_images
from arkx.data.masks import decode_mask
from arkx.synth import WRITERS

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


# ------------------------------------------------------------------------------ files as providers ship them

#: how a provider's label files may differ from the way our synthetic writers emit them (issue 12 §4)
TEXT_VARIANTS = {
    "utf8_bom": lambda text, csv: "\ufeff" + text,
    "crlf": lambda text, csv: text.replace("\n", "\r\n"),
    "header_spaces": lambda text, csv: _map_header(text, _spaced) if csv else text,
    "trailing_commas": lambda text, csv: "\n".join(line + "," if line else line for line in text.split("\n"))
    if csv else text,
    # data rows only: pandas would silently take the first column as the index and shift every column
    "row_trailing_commas": lambda text, csv: _map_rows(text, lambda line: line + ",") if csv else text,
}


def _map_rows(text: str, fn) -> str:
    head, _, rest = text.partition("\n")
    return head + "\n" + "\n".join(fn(line) if line else line for line in rest.split("\n"))


def _spaced(header: str) -> str:
    return ",".join(f" {c} " for c in header.split(","))


def _map_header(text: str, fn) -> str:
    head, _, rest = text.partition("\n")
    return fn(head) + "\n" + rest


def _is_label_file(path: Path) -> tuple[bool, bool]:
    """(a text file an adapter reads, a CSV) -- images and binary files are linked, not rewritten."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".csv", ".txt", ".json")), name.endswith(".csv")


def _mirror(src: Path, dst: Path, rewrite=None, junk: bool = False) -> Path:
    """``dst`` mirrors ``src``: images are symlinked, label files copied through ``rewrite(text, is_csv)``;
    with ``junk`` every folder also holds macOS / Windows artefacts (AppleDouble ``._*`` twins of each
    file, ``.DS_Store``, ``Thumbs.db``, a ``__MACOSX/`` folder)."""
    for folder, dirs, files in os.walk(src):
        target = dst / Path(folder).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            path, out = Path(folder) / name, target / name
            text_file, csv = _is_label_file(path)
            if rewrite is not None and text_file:
                raw = path.read_bytes()
                gz = path.suffix == ".gz"
                text = rewrite((gzip.decompress(raw) if gz else raw).decode("utf-8"), csv).encode("utf-8")
                out.write_bytes(gzip.compress(text) if gz else text)
            else:
                out.symlink_to(path)
            if junk:
                (target / f"._{name}").write_bytes(b"\x00\x05\x16\x07Mac OS X resource fork")
        if junk:
            (target / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
            (target / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
            (target / "__MACOSX").mkdir(exist_ok=True)
            (target / "__MACOSX" / "._x.png").write_bytes(b"\x00\x05\x16\x07")
    return dst


def _same_records(a, b) -> None:
    pd.testing.assert_frame_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.label_names == b.label_names
    for frame in ("boxes", "masks"):
        x, y = getattr(a, frame), getattr(b, frame)
        assert (x is None) == (y is None) and (x is None or len(x) == len(y)), frame


@pytest.fixture(scope="module")
def baselines(roots):
    return {name: arkx.read_dataset(name, roots[name], **OPTIONS.get(name, {})) for name in roots}


@pytest.mark.parametrize("variant", sorted(TEXT_VARIANTS))
@pytest.mark.parametrize("name", adapter_names())
def test_label_file_variants_read_the_same(name, variant, roots, baselines, tmp_path):
    """UTF-8 BOM, CRLF line ends, spaces around header names, trailing commas (empty ``Unnamed`` columns):
    every adapter reads the same records from its label files as shipped in any of these forms."""
    root = _mirror(roots[name], tmp_path / name, rewrite=TEXT_VARIANTS[variant])
    _same_records(arkx.read_dataset(name, root, **OPTIONS.get(name, {})), baselines[name])


@pytest.mark.parametrize("name", adapter_names())
def test_os_artefacts_are_invisible(name, roots, baselines, tmp_path):
    """Issue 19 #19: macOS ``._NAME`` AppleDouble files, ``__MACOSX/``, ``.DS_Store`` and ``Thumbs.db`` in
    every folder change nothing, for every adapter (one shared filter in ``_common.is_os_junk``)."""
    root = _mirror(roots[name], tmp_path / name, junk=True)
    _same_records(arkx.read_dataset(name, root, **OPTIONS.get(name, {})), baselines[name])
