"""Synthetic writers of the localization layouts: SIIM-ACR, CANDID-PTX, TBX11K, NODE21, ChestX-Det, and
a small example for the generic ``coco`` adapter.

Each ``write_<name>(folder, rng, n, size)`` fills ``folder`` the way the provider ships the data and
returns the dataset root its adapter reads. The images are drawn by :mod:`.anatomy` with the shared
finding concepts (pneumothorax, tuberculosis, nodule, ...); masks and boxes are derived from the
pixels the finding changed: ``anatomy.draw_case`` records, per finding, the region of each drawn
component (the finding's own mask where the drawer has one, else ``|delta| > 0.3 * peak``), the same
regions its boxes come from. The per-dataset ``generate_<name>(rng, n, size)`` returns the
:class:`SynthImage` list a writer writes, so tests can compare an adapter's output with what was drawn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data import masks as M
from ..data.mha import write_mha
from .anatomy import Case, Finding, Site, draw_case, to_uint8
from .layouts import _save_gray, _seed, _sex_age, _uid, _uuid_like, _write_csv, _write_dicom

Box = tuple[float, float, float, float]

#: acquisition look of each localization dataset
LOC_SITES: dict[str, Site] = {
    "siim_acr": Site("siim_acr", gamma=0.95, contrast=1.0, offset=0.02, noise=0.02, blur=0.6, marker="tl",
                     marker_seed=11),
    "candid_ptx": Site("candid_ptx", gamma=1.1, contrast=0.95, offset=0.03, noise=0.025, blur=0.5, marker="tr",
                       marker_seed=12),
    "tbx11k": Site("tbx11k", gamma=0.9, contrast=1.05, offset=0.0, noise=0.015, blur=0.8, border=0.04, marker=None),
    "node21": Site("node21", gamma=1.0, contrast=1.0, offset=0.0, noise=0.01, blur=0.4, marker=None),
    "chestx_det": Site("chestx_det", gamma=0.85, contrast=1.0, offset=0.0, noise=0.012, blur=0.9, border_top=0.03,
                       marker="tl", marker_seed=2),
    "coco": Site("coco", gamma=1.0, contrast=1.0, offset=0.0, noise=0.02, blur=0.5, marker=None),
}  # fmt: skip

#: ChestX-Det category -> finding concept(s) drawn (one chosen per case)
CHESTX_DET_CONCEPTS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis",), "Calcification": ("calcification",), "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation",), "Diffuse Nodule": ("nodule",), "Effusion": ("effusion",),
    "Emphysema": ("emphysema",), "Fibrosis": ("fibrosis",), "Fracture": ("rib_fracture",), "Mass": ("mass",),
    "Nodule": ("nodule",), "Pleural Thickening": ("pleural_thickening",), "Pneumothorax": ("pneumothorax",),
}  # fmt: skip
CHESTX_DET_CATEGORIES = tuple(CHESTX_DET_CONCEPTS)
TBX11K_CATEGORIES = ("ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis")
_OTHER = ("effusion", "devices", "cardiomegaly", "opacity", "nodule")


@dataclass
class SynthImage:
    """One generated image: its id, pixels, the case drawn, and the drawn findings as (label, box, mask)."""

    image_id: str
    image: np.ndarray
    case: Case
    findings: list[tuple[str, Box, np.ndarray]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def mask(self, label: str | None = None) -> np.ndarray:
        out = np.zeros(self.image.shape, dtype=bool)
        for lab, _, m in self.findings:
            if label is None or lab == label:
                out |= m
        return out

    @property
    def labels(self) -> set[str]:
        return {lab for lab, _, _ in self.findings}


def _draw_labelled(case: Case, owners: list[str | None], shape, site: Site) -> tuple[np.ndarray, list]:
    """Draw ``case``; the components of finding ``i`` belong to label ``owners[i]`` (None = unlabelled)."""
    drawn = draw_case(case, shape, site)
    out = []
    for i, owner in enumerate(owners):
        if owner is None:
            continue
        for box, m in drawn.components.get(i, []):
            out.append((owner, box, m))
    return drawn.image, out


def _sample_positive(rng, n: int, p: float, k: int = 3) -> np.ndarray:
    pos = rng.random(n) < p
    need = min(k, n // 2) - int(pos.sum())
    if need > 0:
        pos[rng.permutation(np.flatnonzero(~pos))[:need]] = True
    need = min(k, n // 2) - int((~pos).sum())
    if need > 0:
        pos[rng.permutation(np.flatnonzero(pos))[:need]] = False
    return pos


def _ptx_images(rng, n: int, size: int, site: Site, id_of) -> list[SynthImage]:
    """Pneumothorax-or-not images whose pneumothorax mask is drawn (retried until non-empty)."""
    pos = _sample_positive(rng, n, 0.35)
    out = []
    for k in range(n):
        sex, age = _sex_age(rng, 0.45, 12, 90)
        view = "PA" if rng.random() < 0.6 else "AP"
        extra = (Finding(_OTHER[int(rng.integers(len(_OTHER)))]),) if rng.random() < 0.3 else ()
        aseed = _seed(rng)
        findings: tuple[Finding, ...] = extra
        owners: list[str | None] = [None] * len(extra)
        if pos[k]:
            findings = (Finding("pneumothorax", float(rng.uniform(0.7, 1.0)), "R" if rng.random() < 0.5 else "L"),) + extra
            owners = ["Pneumothorax"] + owners
        for _ in range(4):
            case = Case(sex, view, findings, aseed, _seed(rng))
            image, drawn = _draw_labelled(case, owners, (size, size), site)
            if not pos[k] or drawn:
                break
        out.append(SynthImage(id_of(k), image, case, drawn, {"sex": sex, "age": age, "view": view}))
    return out


def _split_rows(mask: np.ndarray, rng) -> list[np.ndarray]:
    """One mask as 1 or (30%) 2 annotation rows (split at the middle row of the mask), like SIIM's repeats."""
    if rng.random() >= 0.3:
        return [mask]
    rows = np.flatnonzero(mask.any(axis=1))
    cut = int(rows[len(rows) // 2])
    top, bottom = mask.copy(), mask.copy()
    top[cut:], bottom[:cut] = False, False
    return [m for m in (top, bottom) if m.any()]


# ------------------------------------------------------------------------------------ SIIM-ACR


def generate_siim_acr(rng, n: int, size: int) -> list[SynthImage]:
    return _ptx_images(rng, n, size, LOC_SITES["siim_acr"], lambda k: _uid("sop", "siim", k))


def _ptx_dicom(path: Path, img, uid_key: tuple, patient_id: str, meta: dict) -> None:
    tags = dict(Modality="CR", BodyPartExamined="CHEST", PatientID=patient_id, PatientName=patient_id,
                PatientSex=meta["sex"], PatientAge=str(meta["age"]), ViewPosition=meta["view"],
                SeriesDescription=f"view: {meta['view']}", PixelSpacing=[0.168, 0.168])  # fmt: skip
    _write_dicom(path, to_uint8(img), sop_class="1.2.840.10008.5.1.4.1.1.7", uid_key=uid_key,
                 photometric="MONOCHROME2", bits_stored=8, tags=tags)  # fmt: skip


def write_siim_acr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``train-rle.csv`` (``ImageId, EncodedPixels``; SIIM relative RLE; -1 = none; repeated rows for
    some masks) and ``dicom-images-train/<study>/<series>/<ImageId>.dcm`` (ImageId = SOPInstanceUID)."""
    root = folder
    rows = []
    for k, im in enumerate(generate_siim_acr(rng, n, size)):
        study, series = _uid("study", "siim", k), _uid("series", "siim", k)
        _ptx_dicom(root / "dicom-images-train" / study / series / f"{im.image_id}.dcm", im.image, ("siim", k),
                   _uuid_like(rng), im.meta)
        mask = im.mask("Pneumothorax")
        if mask.any():
            rows += [[im.image_id, M.rle_encode_kaggle(part)] for part in _split_rows(mask, rng)]
        else:
            rows.append([im.image_id, "-1"])
    _write_csv(root / "train-rle.csv", None, rows, raw_header="ImageId, EncodedPixels")
    return root


# ------------------------------------------------------------------------------------ CANDID-PTX


def generate_candid_ptx(rng, n: int, size: int) -> list[SynthImage]:
    images = _ptx_images(rng, n, size, LOC_SITES["candid_ptx"], lambda k: _uid("sop", "candid", k))
    patient = 0
    for k, im in enumerate(images):  # 1-3 consecutive images per patient
        if k == 0 or rng.random() < 0.55:
            patient += 1
        im.meta["patient"] = f"P{patient}"
    return images


def write_candid_ptx(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``Pneumothorax_reports.csv`` (``SOPInstanceUID,filename,EncodedPixels,Report``; SIIM RLE) and
    ``dataset/<SOPInstanceUID>.dcm``."""
    root = folder
    rows = []
    for k, im in enumerate(generate_candid_ptx(rng, n, size)):
        _ptx_dicom(root / "dataset" / f"{im.image_id}.dcm", im.image, ("candid", k), im.meta["patient"], im.meta)
        mask = im.mask("Pneumothorax")
        side = "right" if mask.any() and np.flatnonzero(mask.any(axis=0)).mean() < size / 2 else "left"
        report = f"{side.capitalize()} apical pneumothorax.\nNo other acute findings." if mask.any() else \
            "Lungs are clear.\nNo pneumothorax."
        name = f"{im.meta['patient']}_{1000 + k}_{k % 3}.dcm"
        rows.append([im.image_id, name, M.rle_encode_kaggle(mask), report])
    _write_csv(root / "Pneumothorax_reports.csv", ("SOPInstanceUID", "filename", "EncodedPixels", "Report"), rows)
    return root


# ------------------------------------------------------------------------------------ TBX11K


def generate_tbx11k(rng, n: int, size: int) -> list[SynthImage]:
    """Healthy / sick / TB images in train, val and (unlabelled) test; TB areas per lung side."""
    site = LOC_SITES["tbx11k"]
    parts = np.array(["train"] * n, dtype=object)
    parts[rng.permutation(n)[: max(2, int(0.2 * n))]] = "val"
    rest = np.flatnonzero(parts == "train")
    parts[rng.permutation(rest)[: max(2, int(0.15 * n))]] = "test"
    classes = rng.choice(3, size=n, p=[0.4, 0.32, 0.28])
    for part in ("train", "val"):  # >= 3 TB (or half) of every labelled split
        idx = np.flatnonzero(parts == part)
        need = min(3, len(idx) // 2) - int((classes[idx] == 2).sum())
        if need > 0:
            classes[rng.permutation(idx[classes[idx] != 2])[:need]] = 2
    counters = {"health": 0, "sick": 0, "tb": 0, "test": 0}
    out = []
    for k in range(n):
        cls = ("health", "sick", "tb")[int(classes[k])]
        findings: tuple[Finding, ...] = ()
        owners: list[str | None] = []
        if cls == "sick":
            findings, owners = (Finding(_OTHER[int(rng.integers(len(_OTHER)))]),), [None]
        elif cls == "tb":
            side = ("R", "L", "B")[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
            cat = TBX11K_CATEGORIES[int(rng.choice(3, p=[0.7, 0.25, 0.05]))] if parts[k] != "test" else "tb"
            findings, owners = (Finding("tuberculosis", float(rng.uniform(0.8, 1.0)), side),), [cat]
        folder = "test" if parts[k] == "test" else cls
        counters[folder] += 1
        prefix = {"health": "h", "sick": "s", "tb": "tb", "test": "t"}[folder]
        case = Case("M" if rng.random() < 0.6 else "F", "PA", findings, _seed(rng), _seed(rng))
        image, drawn = _draw_labelled(case, owners, (size, size), site)
        out.append(SynthImage(f"{folder}/{prefix}{counters[folder]:04d}.png", image, case, drawn,
                              {"part": parts[k], "class": cls}))
    return out


def write_tbx11k(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``TBX11K/imgs/{health,sick,tb,test}/*.png``, ``annotations/json/{TBX11K,all}_{train,val}.json``
    (COCO), ``annotations/json/all_test.json`` and ``lists/*.txt``."""
    root = folder / "TBX11K"
    cats = [{"id": i + 1, "name": name, "supercategory": "Tuberculosis"} for i, name in enumerate(TBX11K_CATEGORIES)]
    docs = {p: {"images": [], "annotations": [], "categories": cats} for p in ("train", "val", "test")}
    ann_id = 0
    for k, im in enumerate(generate_tbx11k(rng, n, size)):
        _save_gray(root / "imgs" / im.image_id, im.image, "PNG")
        part = im.meta["part"]
        docs[part]["images"].append({"id": k, "file_name": im.image_id, "height": size, "width": size})
        if part == "test":
            continue
        for label, (x0, y0, x1, y1), m in im.findings:
            ann_id += 1
            docs[part]["annotations"].append({
                "id": ann_id, "image_id": k, "category_id": TBX11K_CATEGORIES.index(label) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0,
                "segmentation": [],
            })  # fmt: skip
    jdir = root / "annotations" / "json"
    jdir.mkdir(parents=True, exist_ok=True)
    for part in ("train", "val"):
        text = json.dumps(docs[part])
        (jdir / f"TBX11K_{part}.json").write_text(text)
        (jdir / f"all_{part}.json").write_text(text)
    (jdir / "all_test.json").write_text(json.dumps({**docs["test"], "annotations": []}))
    lists = root / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    for part, names in (("TBX11K_train", "train"), ("TBX11K_val", "val"), ("all_test", "test")):
        (lists / f"{part}.txt").write_text("".join(f"{im['file_name']}\n" for im in docs[names]["images"]))
    return root


# ------------------------------------------------------------------------------------ NODE21


def generate_node21(rng, n: int, size: int) -> list[SynthImage]:
    site = LOC_SITES["node21"]
    pos = _sample_positive(rng, n, 0.5)
    out = []
    for k in range(n):
        findings: tuple[Finding, ...] = (Finding("nodule", float(rng.uniform(0.8, 1.0))),) if pos[k] else ()
        for _ in range(4):
            case = Case("M" if rng.random() < 0.5 else "F", "PA", findings, _seed(rng), _seed(rng))
            image, drawn = _draw_labelled(case, ["Nodule"] * len(findings), (size, size), site)
            if not pos[k] or drawn:
                break
        out.append(SynthImage(f"{k}.mha", image, case, drawn))
    return out


def write_node21(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``cxr_images/proccessed_data/images/<k>.mha`` (uint16 MetaImage) and ``metadata.csv``
    (``img_name,x,y,width,height,label``; one row per nodule, one label-0 row per image without)."""
    root = folder
    data = root / "cxr_images" / "proccessed_data"
    rows = []
    for im in generate_node21(rng, n, size):
        write_mha(data / "images" / im.image_id, np.round(np.clip(im.image, 0, 1) * 4095).astype(np.uint16),
                  spacing=(0.2, 0.2))
        if not im.findings:
            rows.append([im.image_id, "0", "0", "0", "0", "0"])
        for _, (x0, y0, x1, y1), _ in im.findings:
            rows.append([im.image_id, str(int(x0)), str(int(y0)), str(int(x1 - x0)), str(int(y1 - y0)), "1"])
    _write_csv(data / "metadata.csv", ("img_name", "x", "y", "width", "height", "label"), rows)
    return root


# ------------------------------------------------------------------------------------ ChestX-Det


def _largest_polygon(mask: np.ndarray) -> list[float] | None:
    polys = M.mask_to_polygons(mask)
    if not polys:
        return None
    h, w = mask.shape
    return max(polys, key=lambda p: int(M.polygon_to_mask(p, h, w).sum()))


def generate_chestx_det(rng, n: int, size: int) -> list[SynthImage]:
    """0-2 ChestX-Det categories per image; each drawn component is one finding whose mask is the
    (hole-filled) polygon of its largest 4-connected part."""
    site = LOC_SITES["chestx_det"]
    out = []
    cats = list(CHESTX_DET_CATEGORIES)
    for k in range(n):
        m = int(rng.choice(3, p=[0.25, 0.5, 0.25]))
        chosen = [cats[(k + j * 5) % len(cats)] for j in range(m)] if k < len(cats) else \
            list(rng.permutation(cats)[:m])
        findings, owners = [], []
        for cat in chosen:
            concepts = CHESTX_DET_CONCEPTS[cat]
            for _ in range(3 if cat == "Diffuse Nodule" else 1):
                findings.append(Finding(concepts[0], float(rng.uniform(0.8, 1.0))))
                owners.append(cat)
        case = Case("M" if rng.random() < 0.55 else "F", "PA", tuple(findings), _seed(rng), _seed(rng))
        image, drawn = _draw_labelled(case, owners, (size, size), site)
        kept = []
        for label, _, mask in drawn:
            poly = _largest_polygon(mask)
            if poly is None:
                continue
            pm = M.polygon_to_mask(poly, size, size)
            kept.append((label, tuple(float(v) for v in M.mask_to_box(pm)), pm))
        im = SynthImage(f"{36000 + k}.png", image, case, kept)
        im.meta["polygons"] = [_largest_polygon(pm) for _, _, pm in kept]
        out.append(im)
    return out


def write_chestx_det(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``ChestX_Det_{train,test}.json`` (``file_name, syms, boxes [x1,y1,x2,y2], polygons [[x,y],...]``)
    and ``{train,test}/<file_name>.png``."""
    root = folder / "ChestX-Det"
    images = generate_chestx_det(rng, n, size)
    test = set(rng.permutation(n)[: max(2, int(0.25 * n))].tolist())
    docs = {"train": [], "test": []}
    for k, im in enumerate(images):
        part = "test" if k in test else "train"
        _save_gray(root / part / im.image_id, im.image, "PNG")
        docs[part].append({
            "file_name": im.image_id, "syms": [lab for lab, _, _ in im.findings],
            "boxes": [list(b) for _, b, _ in im.findings],
            "polygons": [[[p[i], p[i + 1]] for i in range(0, len(p), 2)] for p in im.meta["polygons"]],
        })  # fmt: skip
    for part, entries in docs.items():
        (root / f"ChestX_Det_{part}.json").write_text(json.dumps(entries))
    return root


# ------------------------------------------------------------------------------------ generic COCO

COCO_CATEGORIES = ("Nodule", "Pneumothorax", "Effusion")
_COCO_CONCEPT = {"Nodule": "nodule", "Pneumothorax": "pneumothorax", "Effusion": "effusion"}


def generate_coco(rng, n: int, size: int) -> list[SynthImage]:
    site = LOC_SITES["coco"]
    out = []
    for k in range(n):
        chosen = [c for c in COCO_CATEGORIES if rng.random() < 0.35] or ([] if rng.random() < 0.3 else
                                                                          [COCO_CATEGORIES[k % 3]])
        findings = tuple(Finding(_COCO_CONCEPT[c], 1.0, "R" if c == "Pneumothorax" else None) for c in chosen)
        case = Case("M", "PA", findings, _seed(rng), _seed(rng))
        image, drawn = _draw_labelled(case, list(chosen), (size, size), site)
        part = "test" if k % 5 == 4 else ("val" if k % 5 == 3 else "train")
        out.append(SynthImage(f"img_{k:05d}.png", image, case, drawn, {"part": part}))
    return out


def write_coco(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``images/*.png`` and ``annotations/instances_{train,val,test}.json``: nodules as polygons,
    pneumothorax as uncompressed RLE, effusion as compressed RLE (``iscrowd`` 1 for RLE)."""
    root = folder / "my_coco_dataset"
    cats = [{"id": i + 1, "name": c, "supercategory": "finding"} for i, c in enumerate(COCO_CATEGORIES)]
    docs = {p: {"images": [], "annotations": [], "categories": cats} for p in ("train", "val", "test")}
    ann_id = 0
    for k, im in enumerate(generate_coco(rng, n, size)):
        _save_gray(root / "images" / im.image_id, im.image, "PNG")
        part = im.meta["part"]
        docs[part]["images"].append({"id": k + 1, "file_name": im.image_id, "height": size, "width": size})
        for label, _, mask in im.findings:
            if label == "Nodule":
                polys = M.mask_to_polygons(mask)
                seg, crowd = polys, 0
                mask = M.polygons_to_mask(polys, size, size)
            else:
                seg, crowd = M.rle_encode_coco(mask, compressed=label == "Effusion"), 1
            x0, y0, x1, y1 = M.mask_to_box(mask)
            ann_id += 1
            docs[part]["annotations"].append({
                "id": ann_id, "image_id": k + 1, "category_id": COCO_CATEGORIES.index(label) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(mask.sum()), "iscrowd": crowd, "segmentation": seg,
            })  # fmt: skip
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for part, doc in docs.items():
        (root / "annotations" / f"instances_{part}.json").write_text(json.dumps(doc))
    return root


#: adapter name -> writer(folder, rng, n, size) -> dataset root
WRITERS: dict = {
    "siim_acr": write_siim_acr,
    "candid_ptx": write_candid_ptx,
    "tbx11k": write_tbx11k,
    "node21": write_node21,
    "chestx_det": write_chestx_det,
    "coco": write_coco,
}
#: adapter name -> generator(rng, n, size) -> list[SynthImage] (what the writer writes, in order)
GENERATORS: dict = {
    "siim_acr": generate_siim_acr,
    "candid_ptx": generate_candid_ptx,
    "tbx11k": generate_tbx11k,
    "node21": generate_node21,
    "chestx_det": generate_chestx_det,
    "coco": generate_coco,
}


def zero_strength(case: Case, concepts: set[str]) -> Case:
    """The same case with the findings of ``concepts`` at strength 0 (drawn identically but invisible):
    the difference of the two drawings is what those findings changed."""
    return replace(case, findings=tuple(Finding(f.concept, 0.0, f.side) if f.concept in concepts else f
                                        for f in case.findings))
