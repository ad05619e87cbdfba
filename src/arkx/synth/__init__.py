"""Synthetic chest X-ray datasets written in the providers' official on-disk layouts.

``synthesize(out)`` writes six small datasets that our adapters read exactly as they read the real
downloads (file names, folders, CSV headers and value encodings, DICOM tags)::

    out/chexpert/CheXpert-v1.0-small/            train.csv, valid.csv, {train,valid}/patient*/study*/view*.jpg
    out/nih14/                                  Data_Entry_2017_v2020.csv, BBox_List_2017.csv,
                                                train_val_list.txt, test_list.txt, images_NNN/images/*.png
    out/rsna/                                   stage_2_train_labels.csv, stage_2_detailed_class_info.csv,
                                                stage_2_train_images/*.dcm, stage_2_test_images/*.dcm
    out/vindr_cxr/                              annotations/*.csv, train/*.dicom, test/*.dicom
    out/shenzhen/ChinaSet_AllFiles/             CXR_png/*.png, ClinicalReadings/*.txt
    out/mimic_cxr/mimic-cxr-jpg/2.0.0/          mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz, files/...
    out/mimic_cxr/mimic-iv/hosp/patients.csv.gz (sex of MIMIC subjects, given to the adapter as an option)
    out/SYNTH.json                              seed, n, size and the roots

Images are procedural radiographs (:mod:`.anatomy`) with the findings their labels say, drawn the
same way in every dataset (:data:`LABEL_CONCEPTS`), under a per-dataset acquisition look
(:data:`SITES`). Everything is deterministic from ``seed``; each dataset has its own random
stream derived from ``(seed, dataset name)``, so generating a subset gives the same files.

Ark's premise, as these datasets model it (guarded by ``tests/synth/test_synth_premise.py``): the
providers share one set of latent findings (:data:`CONCEPTS`), each named in the provider's own
vocabulary (effusion is NIH's "Effusion", CheXpert's and MIMIC's "Pleural Effusion", VinDr's "Pleural
effusion"; opacity is NIH's "Infiltration", VinDr's "Infiltration" and "Lung Opacity", and CheXpert's,
MIMIC's and RSNA's "Lung Opacity"), at the provider's own prevalences, drawn by the same function
everywhere under a per-provider acquisition look that never depends on the labels. Each provider records
its labels with its own habits and noise: CheXpert's and MIMIC's report labeler (positive / uncertain /
not mentioned; uncertain positives drawn fainter), NIH's text miner (misses about one present finding in
ten, mentions about one absent finding in two hundred), VinDr's three readers (each may miss a finding,
so the majority vote sometimes does), RSNA's and Shenzhen's adjudicated classes (clean). Label noise
comes from its own random stream: adding it left every image as it was.

Layout: :mod:`.providers` holds one module per dataset adapter (``providers/chexpert.py`` writes what
``arkx/data/adapters/chexpert.py`` reads); they share the drawing (:mod:`.anatomy`), the random draws
(:mod:`.sampling`), the writers of files (:mod:`.files`, :mod:`.dicom`, :mod:`.ids`), the per-label
boxes and masks of a drawing (:mod:`.annotations`), the anatomy masks of the segmentation layouts
(:mod:`.structures`) and the pneumothorax images of SIIM-ACR and CANDID-PTX (:mod:`.pneumothorax`).
"""

from __future__ import annotations

import json
import shutil
import zlib
from pathlib import Path

from ..errors import ArkxValueError
from typing import Iterable

import numpy as np

from .anatomy import CONCEPTS, Case, Finding, Site, draw_case
from .providers import LABEL_CONCEPTS, SITES, WRITERS

#: the Ark-6 datasets :func:`synthesize` writes by default, in writing order
SYNTH_DATASETS = ("chexpert", "nih14", "rsna", "vindr_cxr", "shenzhen", "mimic_cxr")


def dataset_rng(seed: int, name: str) -> np.random.Generator:
    """The independent random stream of dataset ``name`` for ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))]))


def synthesize(
    out: str | Path,
    seed: int = 0,
    n: int = 200,
    size: int = 128,
    datasets: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Write synthetic datasets under ``out``; returns adapter name -> dataset root.

    ``n`` is the approximate number of images per dataset, ``size`` the side of written images (VinDr-CXR
    DICOMs are written somewhat larger and non-square to exercise resizing). A dataset's folder is
    replaced if it exists.
    """
    names = SYNTH_DATASETS if datasets is None else tuple(datasets)
    unknown = [d for d in names if d not in WRITERS]
    if unknown:
        raise ArkxValueError(f"unknown synthetic dataset(s) {unknown}; known: {', '.join(sorted(WRITERS))}")
    if int(n) < 10 or int(size) < 32:
        raise ArkxValueError(f"need n >= 10 (every official split non-empty) and size >= 32 (got n={n}, size={size})")
    if int(seed) < 0:
        raise ArkxValueError(f"seed must be >= 0 (got {seed})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roots: dict[str, Path] = {}
    for name in names:
        folder = out / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        roots[name] = WRITERS[name](folder, dataset_rng(seed, name), int(n), int(size))
    manifest = {
        "generator": "arkx.synth",
        "seed": int(seed),
        "n": int(n),
        "size": int(size),
        "roots": {k: v.relative_to(out).as_posix() for k, v in roots.items()},
    }
    (out / "SYNTH.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return roots


__all__ = [
    "CONCEPTS",
    "Case",
    "Finding",
    "LABEL_CONCEPTS",
    "SITES",
    "SYNTH_DATASETS",
    "WRITERS",
    "Site",
    "dataset_rng",
    "draw_case",
    "synthesize",
]
