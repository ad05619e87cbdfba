"""CANDID-PTX (Dunedin Hospital, Feng et al., Radiology: AI 2021), pneumothorax part, as downloaded.

Expected folder (what is known of the release; it is distributed under a data use agreement)::

    candid-ptx/
        Pneumothorax_reports.csv   SOPInstanceUID, filename?, EncodedPixels, Report?, ...
        dataset/<SOPInstanceUID>[.dcm]      (any folder under the root is searched)
        chest_tube.csv, acute_rib_fracture.csv   (not read)

``EncodedPixels`` holds a pneumothorax mask run-length encoded like the SIIM-ACR challenge (``-1`` =
no pneumothorax). Whether the release uses SIIM's relative offsets or absolute starts is not
documented in the paper; with ``rle="auto"`` (default) the form is told apart from the strings
themselves (see :func:`arkx.data.masks.guess_kaggle_relative`). Rows of one image are merged.

Patient ids: the ``filename`` column, when present, starts with the patient index
(``P<n>_...``); that prefix is used, else the DICOM ``PatientID``, else the image id. Mask size:
DICOM ``Rows``/``Columns`` (``mask_size`` when headers are not read). Images are found by walking
the root once for ``<SOPInstanceUID>.dcm`` / ``.dicom`` or extension-less UID-named files. Task
``("Pneumothorax",)``; boxes from mask components; seeded patient-level split (no official split).
"""

from __future__ import annotations

from pathlib import Path

from ..records import DatasetFormatError, Records
from ._common import require_file
from .registry import register
from .siim_acr import SIIMOptions, index_files, read_rle_table, rle_records

LABEL_FILE = "Pneumothorax_reports.csv"
IMAGE_SUFFIXES = (".dcm", ".dicom")

LAYOUT = """\
candid-ptx/
  Pneumothorax_reports.csv   SOPInstanceUID, [filename,] EncodedPixels (-1 = none), ...
  <any folder>/<SOPInstanceUID>.dcm   (or extension-less UID file names)"""


class CandidOptions(SIIMOptions):
    pass


@register("candid_ptx", options=CandidOptions, layout=LAYOUT,
          summary="CANDID-PTX: Pneumothorax; SIIM-style RLE masks; boxes from masks; seeded patient split")
def read(root: Path, options: CandidOptions) -> Records:
    csv_path = require_file(root, LABEL_FILE, "candid_ptx")
    frame = read_rle_table(csv_path, "candid_ptx", "SOPInstanceUID", "EncodedPixels")
    folder = root / options.images_dir if options.images_dir is not None else root
    index, dup = index_files(root, folder, IMAGE_SUFFIXES, "candid_ptx", uid_names=True)
    patients = None
    notes: dict[str, object] = {"label_rows": len(frame)}
    if "filename" in frame.columns:
        patients = {}
        for sop, name in zip(frame["SOPInstanceUID"].astype(str).str.strip(), frame["filename"].astype(str)):
            name = name.strip()
            if not name:
                continue
            pid = name.split("_", 1)[0]
            if patients.setdefault(sop, pid) != pid:
                raise DatasetFormatError(f"candid_ptx: {csv_path}: SOPInstanceUID {sop} has rows of patients "
                                         f"{patients[sop]} and {pid}")
        notes["patient_id"] = "prefix of the filename column (P<n>_...)"
    if dup:
        notes["duplicate_image_names"] = dup
    return rle_records(dataset="candid_ptx", root=root, frame=frame, id_col="SOPInstanceUID",
                       rle_col="EncodedPixels", csv_path=csv_path, index=index, options=options,
                       patients=patients, notes=notes)
