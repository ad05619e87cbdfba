from __future__ import annotations

import json

import numpy as np
import pandas as pd

from arkx.data.records import Records, Task
from arkx.data.summary import format_summary, summarize


def _images(splits, patients, sex, view):
    n = len(splits)
    return pd.DataFrame(dict(image_id=[f"i{k}" for k in range(n)], path=[f"{k}.png" for k in range(n)],
                             patient_id=patients, split=splits, view=pd.Series(view, dtype=object),
                             sex=pd.Series(sex, dtype=object), age=np.arange(n, dtype=float)))


def multilabel_records():
    images = _images(["train", "train", "train", "val", "test"], ["a", "a", "b", "c", "d"],
                     ["M", "F", None, "M", "M"], ["PA", "AP", "PA", None, "PA"])
    y = np.array([[1, 0], [0, -1], [np.nan, 1], [-1, np.nan], [1, 1]], dtype=np.float32)
    boxes = pd.DataFrame(dict(image_id=["i0", "i0", "i4"], label=["x", "y", "x"],
                              x_min=0.0, y_min=0.0, x_max=1.0, y_max=1.0))
    return Records("demo", "/data/demo", images, Task("demo", "multilabel", ("x", "y")), y, boxes=boxes,
                   notes={"count": np.int64(3), "ratio": np.float32(0.5)})


def test_summarize_multilabel_counts():
    s = summarize(multilabel_records())
    json.dumps(s)  # JSON-serialisable, numpy scalars in notes included
    assert s["dataset"] == "demo" and s["images"] == 5 and s["patients"] == 4
    assert s["splits"] == {"train": {"images": 3, "patients": 2}, "val": {"images": 1, "patients": 1},
                           "test": {"images": 1, "patients": 1}}
    assert s["labels"]["train"]["x"] == {"positive": 1, "negative": 1, "uncertain": 0, "missing": 1}
    assert s["labels"]["train"]["y"] == {"positive": 1, "negative": 1, "uncertain": 1, "missing": 0}
    assert s["labels"]["val"]["x"] == {"positive": 0, "negative": 0, "uncertain": 1, "missing": 0}
    assert s["labels"]["val"]["y"]["missing"] == 1
    assert s["sex"] == {"F": 1, "M": 3, "unknown": 1}
    assert s["views"] == {"AP": 1, "PA": 3, "unknown": 1}
    assert s["boxes"] == {"x": 2, "y": 1}
    assert s["task"] == {"name": "demo", "kind": "multilabel", "labels": ["x", "y"]}
    assert s["notes"] == {"count": 3, "ratio": 0.5} and s["split_source"] == "official"


def test_summarize_multiclass_counts():
    images = _images(["train", "train", "test"], ["a", "b", "c"], ["M", "M", "F"], ["PA"] * 3)
    y = np.array([[1, 0, 0], [0, 0, 1], [np.nan] * 3], dtype=np.float32)
    rec = Records("mc", ".", images, Task("mc", "multiclass", ("n", "o", "p")), y, split_source="seeded-patient")
    s = summarize(rec)
    assert s["labels"]["train"] == {"classes": {"n": 1, "o": 0, "p": 1}, "missing": 0}
    assert s["labels"]["test"] == {"classes": {"n": 0, "o": 0, "p": 0}, "missing": 1}
    assert s["boxes"] is None and s["split_source"] == "seeded-patient"
    text = format_summary(s)
    assert "(missing)" in text and "seeded-patient" in text


def test_format_summary_is_plain_text_with_counts():
    text = format_summary(summarize(multilabel_records()))
    assert isinstance(text, str) and "\x1b[" not in text
    assert "demo" in text and "5 images of 4 patients" in text
    assert "1/1/0/1" in text  # label x in train: positive/negative/uncertain/missing
    assert "sex: F 1, M 3, unknown 1" in text and "boxes: x 2, y 1" in text
