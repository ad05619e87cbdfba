"""The DICOM writer of the synthetic generator: one uncompressed (explicit VR little endian) single-frame
file with the tags a provider writes, UIDs derived from a key so that the same dataset gets the same
UIDs on every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid


def dicom_uid(*parts) -> str:
    """A DICOM UID determined by ``parts``."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_dicom(path: Path, pixels: np.ndarray, *, sop_class: str, uid_key: tuple, photometric: str,
                bits_stored: int, tags: dict) -> None:  # fmt: skip
    """``pixels`` (uint8 or uint16) with ``tags``; SOP, study and series UIDs derived from ``uid_key``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sop_uid = dicom_uid("sop", *uid_key)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = dicom_uid("study", *uid_key)
    ds.SeriesInstanceUID = dicom_uid("series", *uid_key)
    for key, value in tags.items():
        if key == "PatientAge":  # providers write ages that are not valid AS strings (RSNA: "51")
            ds.add(DataElement(0x00101010, "AS", value, validation_mode=config.IGNORE))
        else:
            setattr(ds, key, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    data = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.add_new(0x7FE00010, "OB" if pixels.dtype == np.uint8 else "OW", data)
    ds.save_as(path, enforce_file_format=True)
