"""Pneumothorax images shared by the SIIM-ACR and CANDID-PTX providers: pneumothorax-or-not cases
whose pneumothorax region is drawn (retried until it is), some with an incidental finding, and the
8-bit DICOM both datasets ship."""

from __future__ import annotations

from pathlib import Path

from .anatomy import Case, Finding, Site, to_uint8
from .annotations import SynthImage, draw_labelled
from .dicom import write_dicom
from .sampling import draw_seed, sample_positive, sex_age

#: concepts of the incidental (unlabelled) findings of the localization datasets
INCIDENTAL = ("effusion", "devices", "cardiomegaly", "opacity", "nodule")


def pneumothorax_images(rng, n: int, size: int, site: Site, id_of) -> list[SynthImage]:
    """Pneumothorax-or-not images whose pneumothorax mask is drawn (retried until non-empty)."""
    pos = sample_positive(rng, n, 0.35)
    out = []
    for k in range(n):
        sex, age = sex_age(rng, 0.45, 12, 90)
        view = "PA" if rng.random() < 0.6 else "AP"
        extra = (Finding(INCIDENTAL[int(rng.integers(len(INCIDENTAL)))]),) if rng.random() < 0.3 else ()
        aseed = draw_seed(rng)
        findings: tuple[Finding, ...] = extra
        owners: list[str | None] = [None] * len(extra)
        if pos[k]:
            findings = (Finding("pneumothorax", float(rng.uniform(0.7, 1.0)), "R" if rng.random() < 0.5 else "L"),) + extra
            owners = ["Pneumothorax"] + owners
        for _ in range(4):
            case = Case(sex, view, findings, aseed, draw_seed(rng))
            image, drawn = draw_labelled(case, owners, (size, size), site)
            if not pos[k] or drawn:
                break
        out.append(SynthImage(id_of(k), image, case, drawn, {"sex": sex, "age": age, "view": view}))
    return out


def write_pneumothorax_dicom(path: Path, img, uid_key: tuple, patient_id: str, meta: dict) -> None:
    """The 8-bit CR DICOM of SIIM-ACR and CANDID-PTX (sex, age and view from ``meta``)."""
    tags = dict(Modality="CR", BodyPartExamined="CHEST", PatientID=patient_id, PatientName=patient_id,
                PatientSex=meta["sex"], PatientAge=str(meta["age"]), ViewPosition=meta["view"],
                SeriesDescription=f"view: {meta['view']}", PixelSpacing=[0.168, 0.168])  # fmt: skip
    write_dicom(path, to_uint8(img), sop_class="1.2.840.10008.5.1.4.1.1.7", uid_key=uid_key,
                photometric="MONOCHROME2", bits_stored=8, tags=tags)  # fmt: skip
