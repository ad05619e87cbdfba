"""What an adapter read from a dataset folder, as a JSON-serialisable dict and as a plain-text table.

Backs ``arkx datasets inspect ROOT --type T [--json]``. Counts are of the raw records (before any
label policy), so uncertain (-1) and missing (blank) labels are reported as the provider wrote them.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from .records import SPLITS, Records


def _plain(value: Any) -> Any:
    """numpy / pandas scalars and containers -> JSON types (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _counts(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        key = "unknown" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _label_counts(records: Records, mask: np.ndarray) -> dict[str, dict[str, int]]:
    y = records.labels[mask]
    if records.task.kind == "multiclass":
        missing = int(np.isnan(y).all(axis=1).sum()) if len(y) else 0
        per = {name: int(np.nansum(y[:, j] == 1)) for j, name in enumerate(records.label_names)}
        return {"classes": per, "missing": missing}
    return {
        name: {"positive": int((y[:, j] == 1).sum()), "negative": int((y[:, j] == 0).sum()),
               "uncertain": int((y[:, j] == -1).sum()), "missing": int(np.isnan(y[:, j]).sum())}
        for j, name in enumerate(records.label_names)
    }  # fmt: skip


def _mask_counts(records: Records) -> tuple[dict[str, int] | None, dict[str, int] | None, dict | None]:
    """Masks per label, and their pixels per label (each mask decoded with ``arkx.data.masks.decode_mask``).

    A mask that cannot be decoded (missing file, malformed RLE) is counted under ``mask_decode_errors``
    (count and the first message) instead of failing the whole summary.
    """
    if records.masks is None:
        return None, None, None
    from .masks import MaskDecodeError, decode_mask

    per_class = _counts(records.masks["label"])
    pixels: dict[str, int] = {label: 0 for label in per_class}
    errors, first = 0, None
    for row in records.masks.to_dict("records"):
        key = "unknown" if row.get("label") is None else str(row["label"])
        try:
            pixels[key] = pixels.get(key, 0) + int(decode_mask(row, records.root).sum())
        except (MaskDecodeError, OSError, ValueError) as err:
            errors += 1
            first = first or f"{row.get('image_id')}: {err}"
    return per_class, dict(sorted(pixels.items())), ({"count": errors, "first": first} if errors else None)


def summarize(records: Records) -> dict:
    """Counts of one Records: images, patients, per split, per label, sex, view, boxes, masks, notes."""
    images = records.images
    split = images["split"].to_numpy()
    splits = {
        s: {"images": int((split == s).sum()), "patients": int(images.loc[split == s, "patient_id"].nunique())}
        for s in SPLITS
    }
    task = None
    labels = None
    if records.task is not None:
        task = {"name": records.task.name, "kind": records.task.kind, "labels": list(records.label_names)}
        labels = {s: _label_counts(records, split == s) for s in SPLITS}
    boxes = None
    if records.boxes is not None:
        boxes = _counts(records.boxes["label"])
    masks_per_class, mask_pixels, mask_errors = _mask_counts(records)
    return _plain({
        "dataset": records.dataset, "root": str(records.root), "images": len(images),
        "patients": int(images["patient_id"].nunique()), "splits": splits, "task": task, "labels": labels,
        "sex": _counts(images["sex"]), "views": _counts(images["view"]), "boxes": boxes,
        "masks_per_class": masks_per_class, "mask_pixels_per_class": mask_pixels,
        **({"mask_decode_errors": mask_errors} if mask_errors else {}),
        "split_source": records.split_source, "notes": records.notes,
        **({"uncertain_default": _uncertain_default(records)} if _uncertain_default(records) else {}),
    })  # fmt: skip


def _uncertain_default(records: Records) -> str | None:
    """The policy training applies to this dataset's uncertain (-1) labels when the config names none."""
    from .adapters.registry import _REGISTRY

    spec = _REGISTRY.get(records.dataset)
    if spec is None or records.task is None or records.task.kind != "multilabel":
        return None
    return spec.default_uncertain


def format_summary(summary: dict) -> str:
    """A readable plain-text rendering of :func:`summarize` (rich tables, no colour codes)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    console = Console(file=buf, width=140, color_system=None, force_terminal=False, highlight=False)
    console.print(f"dataset {summary['dataset']}  root {summary['root']}")
    console.print(f"{summary['images']} images of {summary['patients']} patients; splits: {summary['split_source']}")
    table = Table(title="splits", box=box.ASCII)
    for col in ("split", "images", "patients"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for s, c in summary["splits"].items():
        table.add_row(s, str(c["images"]), str(c["patients"]))
    console.print(table)
    task = summary.get("task")
    if task:
        title = ("labels: positive/negative/uncertain/missing per split" if task["kind"] == "multilabel"
                 else "classes: images per class per split")
        table = Table(title=title, box=box.ASCII)
        table.add_column("label")
        for s in summary["splits"]:
            table.add_column(s, justify="right")
        per = summary["labels"]
        if task["kind"] == "multilabel":
            for name in task["labels"]:
                cells = ("/".join(str(per[s][name][k]) for k in ("positive", "negative", "uncertain", "missing"))
                         for s in summary["splits"])
                table.add_row(name, *cells)
        else:
            for name in task["labels"]:
                table.add_row(name, *(str(per[s]["classes"][name]) for s in summary["splits"]))
            table.add_row("(missing)", *(str(per[s]["missing"]) for s in summary["splits"]))
        console.print(table)
    if summary.get("uncertain_default"):
        console.print(f"uncertain (-1) labels: trained as {summary['uncertain_default']!r} unless the config's "
                      "`uncertain` says otherwise")
    for key in ("sex", "views", "boxes", "masks_per_class", "mask_pixels_per_class"):
        if summary.get(key):
            console.print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in summary[key].items()))
    for key, value in (summary.get("notes") or {}).items():
        console.print(f"note {key}: {value}")
    return buf.getvalue()
