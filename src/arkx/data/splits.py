"""Seeded splits shared by the dataset adapters and the synthetic generator.

A patient's split depends only on ``(seed, patient id)``: not on row order, nor on which other
patients are present, so adding images never moves an existing patient to another split, and the
synthetic generator (:mod:`arkx.synth`) can place its positives in the validation images an adapter
will carve, without reading the adapter's private helpers.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def stable_unit_interval(key: str, seed: int) -> float:
    """A number in [0, 1) drawn from ``(seed, key)`` alone (SHA-256), the same on every machine and run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def patient_split(
    patient_ids: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> np.ndarray:
    """Seeded patient-level split: every image of a patient gets the same split.

    The split of a patient depends only on (seed, patient id), not on row order or on which other
    patients are present, so adding images never moves an existing patient to another split.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {fractions} must sum to 1")
    cut_train, cut_val = fractions[0], fractions[0] + fractions[1]
    cache: dict[str, str] = {}
    out = []
    for pid in patient_ids:
        pid = str(pid)
        if pid not in cache:
            u = stable_unit_interval(pid, seed)
            cache[pid] = "train" if u < cut_train else ("val" if u < cut_val else "test")
        out.append(cache[pid])
    return np.asarray(out, dtype=object)


def carve_validation(
    patient_ids: Sequence[str], is_trainval: np.ndarray, seed: int, val_fraction: float = 0.1
) -> np.ndarray:
    """Split an official train(+val) portion into train / val by patient; the rest is ``test``.

    Used where the provider ships only train/test (NIH14), so model selection never sees test.
    """
    out = np.where(np.asarray(is_trainval, dtype=bool), "train", "test").astype(object)
    for i, pid in enumerate(patient_ids):
        if out[i] == "train" and in_carved_validation(str(pid), seed, val_fraction):
            out[i] = "val"
    return out


def in_carved_validation(key: str, seed: int, val_fraction: float) -> bool:
    """Whether the training image or patient ``key`` goes to the validation split :func:`carve_validation`
    carves (for adapters that carve image by image). Drawn from a stream apart from :func:`patient_split`'s."""
    return stable_unit_interval(key, seed + 7919) < val_fraction
