"""The seeded splits shared by the adapters and the synthetic generator (``arkx.data.splits``)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import arkx.synth
from arkx.data.adapters import _common
from arkx.data.splits import carve_validation, in_carved_validation, patient_split, stable_unit_interval

IDS = [f"p{i}" for i in range(12)]


def test_splits_are_pinned():
    # Pinned values (computed before the splits moved out of adapters/_common.py): a change here moves
    # patients between splits in every adapter and changes the synthetic datasets (ChestDR).
    assert stable_unit_interval("p1", 0) == 0.11603082373131626
    assert stable_unit_interval("patient/7", 3) == 0.2369473584076687
    assert list(patient_split(IDS, 5)) == ["train"] * 3 + ["test"] + ["train"] * 5 + ["test", "test", "train"]
    carved = carve_validation(IDS, np.array([True] * 9 + [False] * 3), 5, 0.3)
    assert list(carved) == ["val", "val"] + ["train"] * 4 + ["val", "train", "train"] + ["test"] * 3


def test_image_level_carving_agrees_with_carve_validation():
    # tbx11k, chestx_det and coco carve image by image with in_carved_validation: same rule, same images
    ids = [f"img{i}" for i in range(300)]
    carved = carve_validation(ids, np.ones(len(ids), bool), 11, 0.2)
    assert [c == "val" for c in carved] == [in_carved_validation(i, 11, 0.2) for i in ids]
    assert 30 < sum(c == "val" for c in carved) < 90


def test_adapters_keep_importing_the_splits_from_common():
    assert _common.carve_validation is carve_validation and _common.patient_split is patient_split


def test_synth_imports_no_adapter_module():
    # the generator may use the public splits, never the adapters' (private) helpers
    root = Path(arkx.synth.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                absolute = node.level == 0 and (node.module or "").startswith("arkx.data.adapters")
                relative = node.level > 1 and "adapters" in (node.module or "").split(".")
                named = any(a.name == "adapters" for a in node.names)  # from ..data import adapters
                if absolute or relative or named:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name.startswith("arkx.data.adapters") for a in node.names):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
