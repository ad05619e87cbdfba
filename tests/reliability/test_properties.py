"""Property-based tests (hypothesis) of the parsing every adapter relies on: label columns, box
conversions (NIH x,y,w,h and RSNA x,y,width,height -> x_min..y_max) and the seeded patient split."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arkx.data.adapters._common import parse_label_columns, patient_split
from arkx.data.adapters.nih14 import parse_bbox_list
from arkx.data.adapters.rsna import parse_train_labels
from arkx.data.records import DatasetFormatError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = {"1": 1.0, "0": 0.0, "-1": -1.0, "1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, " 1": 1.0, "": np.nan, " ": np.nan,
         None: np.nan}
INVALID = ["2", "0.5", "-2", "yes", "1e3", "positive", "3.0", "-0.5", "1,0"]


@st.composite
def label_grids(draw):
    rows = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 5))
    tokens = list(VALID)
    return [[draw(st.sampled_from(tokens)) for _ in range(cols)] for _ in range(rows)]


@SETTINGS
@given(grid=label_grids())
def test_any_mix_of_valid_values_parses_exactly(grid):
    columns = [f"L{j}" for j in range(len(grid[0]))]
    frame = pd.DataFrame(grid, columns=columns, dtype=object)
    out = parse_label_columns(frame, columns, Path("labels.csv"), "toy")
    expected = np.array([[VALID[t] for t in row] for row in grid], dtype=np.float32)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)  # NaN == NaN here


@SETTINGS
@given(grid=label_grids(), data=st.data())
def test_an_invalid_token_is_reported_at_its_row_and_column(grid, data):
    rows, cols = len(grid), len(grid[0])
    cells = data.draw(st.sets(st.tuples(st.integers(0, rows - 1), st.integers(0, cols - 1)), min_size=1, max_size=4))
    for i, j in cells:
        grid[i][j] = data.draw(st.sampled_from(INVALID))
    columns = [f"L{j}" for j in range(cols)]
    frame = pd.DataFrame(grid, columns=columns, dtype=object)
    # the first column (in header order) holding a bad value, and its first bad row
    j = min(j for _, j in cells)
    i = min(i for i, jj in cells if jj == j)
    with pytest.raises(DatasetFormatError) as err:
        parse_label_columns(frame, columns, Path("labels.csv"), "toy")
    assert f"toy: labels.csv row {i + 2} column 'L{j}': value {grid[i][j]!r}" in str(err.value)


coordinate = st.integers(0, 4096).map(float) | st.floats(0, 4096, allow_nan=False, width=32).map(float)
size = st.integers(0, 2048).map(float) | st.floats(0, 2048, allow_nan=False, width=32).map(float)


@SETTINGS
@given(boxes=st.lists(st.tuples(coordinate, coordinate, size, size), min_size=1, max_size=8))
def test_nih_xywh_boxes_round_trip(boxes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BBox_List_2017.csv"
        lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
        lines += [f"img{k:03d}.png,Infiltrate,{x!r},{y!r},{w!r},{h!r}" for k, (x, y, w, h) in enumerate(boxes)]
        path.write_text("\n".join(lines) + "\n")
        out = parse_bbox_list(path, {f"img{k:03d}.png" for k in range(len(boxes))})
    assert out["image_id"].tolist() == [f"img{k:03d}" for k in range(len(boxes))]
    assert set(out["label"]) == {"Infiltration"}
    got = out[["x_min", "y_min", "x_max", "y_max"]].to_numpy()
    want = np.array([(x, y, x + w, y + h) for x, y, w, h in boxes])
    np.testing.assert_array_equal(got, want)
    # and back: x, y, w, h are recovered up to float rounding of one addition
    np.testing.assert_allclose(got[:, 2] - got[:, 0], [b[2] for b in boxes], rtol=0, atol=1e-9 * 8192)
    np.testing.assert_allclose(got[:, 3] - got[:, 1], [b[3] for b in boxes], rtol=0, atol=1e-9 * 8192)


@SETTINGS
@given(boxes=st.lists(st.tuples(coordinate, coordinate, size, size), min_size=1, max_size=6),
       bad=st.data())
def test_nih_negative_size_is_reported_at_its_row(boxes, bad):
    k = bad.draw(st.integers(0, len(boxes) - 1))
    x, y, w, h = boxes[k]
    which = bad.draw(st.sampled_from(["w", "h"]))
    neg = -bad.draw(st.floats(1e-3, 100))
    boxes[k] = (x, y, neg, h) if which == "w" else (x, y, w, neg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "BBox_List_2017.csv"
        lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
        lines += [f"img{j}.png,Mass,{a!r},{b!r},{c!r},{d!r}" for j, (a, b, c, d) in enumerate(boxes)]
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(DatasetFormatError, match=rf"BBox_List_2017.csv row {k + 2} \(image img{k}\): negative"):
            parse_bbox_list(path, {f"img{j}.png" for j in range(len(boxes))})


@SETTINGS
@given(patients=st.lists(st.tuples(st.lists(st.tuples(coordinate, coordinate, size, size), max_size=3),
                                   st.booleans()), min_size=1, max_size=6))
def test_rsna_boxes_and_targets_round_trip(patients):
    rows, want_boxes, want_target = ["patientId,x,y,width,height,Target"], [], {}
    for k, (boxes, positive) in enumerate(patients):
        pid = f"pid-{k}"
        if positive and boxes:
            want_target[pid] = 1
            for x, y, w, h in boxes:
                rows.append(f"{pid},{x!r},{y!r},{w!r},{h!r},1")
                want_boxes.append((pid, x, y, x + w, y + h))
        else:
            want_target[pid] = 0
            rows.append(f"{pid},,,,,0")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stage_2_train_labels.csv"
        path.write_text("\n".join(rows) + "\n")
        per_patient, boxes = parse_train_labels(path)
    assert dict(zip(per_patient["patientId"], per_patient["Target"])) == want_target
    got = [(r.image_id, r.x_min, r.y_min, r.x_max, r.y_max) for r in boxes.itertuples()]
    assert got == want_boxes


patient_ids = st.lists(st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8),
                       min_size=1, max_size=40)


@SETTINGS
@given(ids=patient_ids, seed=st.integers(0, 2**31), data=st.data())
def test_patient_split_is_deterministic_disjoint_and_order_and_context_free(ids, seed, data):
    images = ids + data.draw(st.lists(st.sampled_from(ids), max_size=20))  # several images per patient
    split = patient_split(images, seed)
    assert set(split) <= {"train", "val", "test"}
    assert list(split) == list(patient_split(images, seed))  # deterministic
    of = {}
    for pid, s in zip(images, split):
        assert of.setdefault(pid, s) == s  # every image of a patient in one split
    order = data.draw(st.permutations(range(len(images))))
    shuffled = patient_split([images[i] for i in order], seed)
    assert [of[images[i]] for i in order] == list(shuffled)  # independent of row order
    others = data.draw(st.lists(st.text(min_size=1, max_size=8), max_size=10))
    some = data.draw(st.lists(st.sampled_from(images), min_size=1, max_size=10))
    mixed = patient_split(some + others, seed)
    assert list(mixed[: len(some)]) == [of[p] for p in some]  # independent of which other patients exist


def test_patient_split_fractions_hold_on_many_patients():
    split = patient_split([f"p{i}" for i in range(20000)], seed=3)
    fractions = [np.mean(split == s) for s in ("train", "val", "test")]
    np.testing.assert_allclose(fractions, (0.7, 0.1, 0.2), atol=0.015)
    assert not (patient_split([f"p{i}" for i in range(500)], seed=4) == patient_split(
        [f"p{i}" for i in range(500)], seed=5)).all()  # the seed matters
