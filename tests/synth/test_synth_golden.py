"""Golden digests of the synthetic datasets: the same seed writes the same datasets, byte for byte.

The Ark demo table must stay bit-identical, so the generator must keep writing the same files (refactors
of :mod:`arkx.synth` included). Digests were taken before the generator was split into providers and
checked equal after. A deliberate change of the generator updates them (and says so in its note).
Changes so far: ``nih14`` when its labels became text-mined (missed findings and false mentions; its
images unchanged).

What is hashed per file: text files as bytes (gzipped ones decompressed: gzip headers hold no
timestamp anyway), PNG/GIF as decoded pixels, DICOM as pixel data plus identifying tags, and JPEG by
name only (its bytes depend on the encoder's version).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from arkx.synth import WRITERS, synthesize

#: dataset -> first 16 hex digits of the digest of its folder (seed 7, n=10, size=32)
GOLDEN = {
    "candid_ptx": "6a013dbe9de5b52c",
    "chestdr": "2149bda1d1228176",
    "chestx_det": "8aa99c6cf2f2a266",
    "chexmask": "3663458c1eb2ed18",
    "chexpert": "618aea7659edee44",
    "coco": "6bc6111c72515054",
    "covidx": "e5a0f597e9ce07a0",
    "csv": "62d7916fa7cf77b8",
    "cxr_lt": "167cb4e573d26cd6",
    "folder": "ff16bc69a060817f",
    "jsrt": "ac225522b8e44b8a",
    "mask_folder": "db4ca7894077d693",
    "mimic_cxr": "c8597e8b5f7acad6",
    "montgomery": "453053b960068fe3",
    "nih14": "4ecccfe2efac010f",
    "node21": "5acc9fd9ef7d5bd5",
    "pediatric_pneumonia": "096739fb7d3ce21f",
    "rsna": "97c42a68cd35eef2",
    "shenzhen": "bca2bf492bea16a4",
    "siim_acr": "aaf390daa152c506",
    "tbx11k": "ebb435ffab2de5a1",
    "vindr_cxr": "6abdfbf124604ff1",
    "vindr_ribcxr": "9945a0a6599f1dff",
}


def _content(path: Path) -> bytes:
    suffix = path.suffix.lower()
    if suffix in (".png", ".gif"):
        with Image.open(path) as im:
            return f"{im.mode} {im.size}".encode() + np.asarray(im).tobytes()
    if suffix in (".jpg", ".jpeg"):
        return b"jpeg"
    if suffix in (".dcm", ".dicom"):
        ds = pydicom.dcmread(path)
        keys = ("SOPInstanceUID", "PhotometricInterpretation", "BitsStored", "Rows", "Columns", "PatientID",
                "PatientSex", "PatientAge")
        return "|".join(str(ds.get(k, "")) for k in keys).encode() + bytes(ds.PixelData)
    data = path.read_bytes()
    return gzip.decompress(data) if suffix == ".gz" else data


def _digests(out: Path) -> dict[str, str]:
    found = {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        h = hashlib.sha256()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(f.relative_to(out).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(_content(f)).digest())
        found[folder.name] = h.hexdigest()[:16]
    return found


def test_every_layout_is_written_as_before(tmp_path):
    assert sorted(GOLDEN) == sorted(WRITERS)
    synthesize(tmp_path, seed=7, n=10, size=32, datasets=sorted(WRITERS))
    found = _digests(tmp_path)
    changed = sorted(name for name in GOLDEN if found.get(name) != GOLDEN[name])
    assert changed == [], f"synthetic datasets changed: {changed}"
