"""Synthetic writers of the segmentation layouts: JSRT + SCR, Montgomery, VinDr-RibCXR, CheXmask, mask folder.

Masks are rasterised from the *same geometry* the drawer uses (``anatomy._geometry`` from the case's
``anatomy_seed``), so they cover the drawn structures:

* lungs: ``Lung.mask`` > 0.5 minus the heart (as in SCR, a lung field excludes the heart shadow);
* heart: the heart ellipse the drawer paints (``_disk(*heart)`` > 0.5);
* clavicles: points within the drawn half-thickness (``0.011 * s``) of the clavicle segment;
* ribs: the drawn posterior rib bands (``|v - y_k(u)| < 0.0085 * s`` around the parabola
  ``y_k = ytop + 0.05 s k + 1.9 (u - cx)^2``) where the drawer shows them (beyond the spine, inside
  ``dmax``, above the diaphragm cut-off), as polygons.

Sides are the patient's: ``Right Lung`` / ``R1..R10`` are drawn on the image left. Only frontal cases
without structural findings (which move the anatomy with the per-image stream) are segmented;
:func:`structure_masks` refuses others. Each writer is deterministic from its ``rng``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.raw_img import JSRT_PIXEL_MM, JSRT_SIDE, write_jsrt_img
from .anatomy import STRUCTURAL, Case, Finding, Site, _disk, _geometry, _grid, _segment_dist, draw_case, to_uint8

#: acquisition look of each segmentation dataset (no burned-in markers: they could cover a structure)
SEG_SITES: dict[str, Site] = {
    "jsrt": Site("jsrt", gamma=1.1, contrast=1.0, offset=0.0, noise=0.01, blur=0.8, marker=None),
    "montgomery": Site("montgomery", gamma=0.9, contrast=1.0, offset=0.02, noise=0.012, blur=0.6, marker=None),
    "vindr_ribcxr": Site("vindr_ribcxr", gamma=1.2, contrast=1.0, noise=0.006, blur=0.3, marker=None),
    "chexmask": Site("chexmask", gamma=0.85, contrast=1.0, noise=0.012, blur=0.9, marker=None),
    "mask_folder": Site("mask_folder", gamma=1.0, contrast=1.0, noise=0.015, blur=0.5, marker=None),
}
STRUCTURES = ("Left Lung", "Right Lung", "Heart", "Left Clavicle", "Right Clavicle")
RIB_LABELS = tuple(f"R{i}" for i in range(1, 11)) + tuple(f"L{i}" for i in range(1, 11))
SCR_FOLDERS = {"Left Lung": "left lung", "Right Lung": "right lung", "Heart": "heart",
               "Left Clavicle": "left clavicle", "Right Clavicle": "right clavicle"}


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**62))


def _check_case(case: Case) -> None:
    if case.view == "LATERAL":
        raise ValueError("structure masks are defined for frontal (PA/AP) cases only")
    moved = [f.concept for f in case.findings if f.concept in STRUCTURAL]
    if moved:
        raise ValueError(f"structure masks cannot follow structural findings {moved} (they move the anatomy)")


def structure_masks(case: Case, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Bool masks ``[h, w]`` of the lungs, heart and clavicles that :func:`draw_case` draws for ``case``."""
    _check_case(case)
    h, w = int(shape[0]), int(shape[1])
    v, u, px = _grid(h, w)
    g = _geometry(case, np.random.default_rng(case.anatomy_seed))
    heart = np.broadcast_to(_disk(v, u, *g.heart, 2.5 * px) > 0.5, (h, w))
    out = {
        "Right Lung": np.broadcast_to(g.lungs["R"].mask(v, u, 1.5 * px) > 0.5, (h, w)) & ~heart,
        "Left Lung": np.broadcast_to(g.lungs["L"].mask(v, u, 1.5 * px) > 0.5, (h, w)) & ~heart,
        "Heart": heart.copy(),
    }
    for side, label in ((-1.0, "Right Clavicle"), (1.0, "Left Clavicle")):
        x0, y0 = g.cx + side * 0.03, g.cy - 0.265 * g.s
        x1, y1 = g.cx + side * 0.27 * g.s, g.cy - 0.33 * g.s
        dist, _ = _segment_dist(v, u, x0, y0, x1, y1)
        out[label] = np.broadcast_to(dist < 0.011 * g.s, (h, w)).copy()
    return out


def rib_polygons(case: Case, shape: tuple[int, int], samples: int = 28) -> dict[str, list[float]]:
    """Flat ``[x0, y0, x1, y1, ...]`` polygons (pixel coordinates, pixel ``i`` spans ``[i, i+1)``) of the
    visible part of each drawn posterior rib; ribs hidden below the diaphragm are left out."""
    _check_case(case)
    h, w = int(shape[0]), int(shape[1])
    m = min(h, w)
    g = _geometry(case, np.random.default_rng(case.anatomy_seed))
    ytop = g.cy - 0.95 * g.lungs["R"].ry + 0.005
    dmax = g.lungs["R"].rx * 2 + 0.03
    t = 0.0085 * g.s
    d0, d1 = 0.035 + 2.0 / m, dmax - 3.0 / m  # where the drawer's soft ends are well above half
    d = np.linspace(d0, d1, samples)
    out: dict[str, list[float]] = {}
    for k in range(10):
        y = ytop + k * 0.05 * g.s + 1.9 * d**2
        for sgn, prefix, lung in ((-1.0, "R", g.lungs["R"]), (1.0, "L", g.lungs["L"])):
            x = g.cx + sgn * d
            dome = lung.dome_y(x) + 0.03 - 3.0 / m  # ribs fade out below the diaphragm line + 0.03
            visible = (y + t) < dome
            # longest run of visible samples
            best, start = (0, 0), None
            for i, ok in enumerate(np.append(visible, False)):
                if ok and start is None:
                    start = i
                elif not ok and start is not None:
                    if i - start > best[1] - best[0]:
                        best = (start, i)
                    start = None
            if best[1] - best[0] < 3:
                continue
            xs, ys = x[best[0]:best[1]], y[best[0]:best[1]]
            top = np.stack([xs, ys - t], axis=1)
            bottom = np.stack([xs, ys + t], axis=1)[::-1]
            pts = np.concatenate([top, bottom])  # normalised (u, v)
            px_x = pts[:, 0] * m + (w - m) / 2.0
            px_y = pts[:, 1] * m + (h - m) / 2.0
            out[f"{prefix}{k + 1}"] = [round(float(c), 3) for xy in zip(px_x, px_y) for c in xy]
    return out


# ----------------------------------------------------------------------------------------- file IO


def _save_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img), mode="L").save(path, format="PNG")


def _save_mask(path: Path, mask: np.ndarray) -> None:
    """Binary mask, 0 outside / 255 inside (PNG, or GIF with palette index 0 = black, 1 = white)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        im = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
        im.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
        im.save(path, format="GIF", optimize=False)
    else:
        Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, mode="L").save(path, format="PNG")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())


def _sex_age(rng, p_female: float = 0.5, lo: int = 18, hi: int = 85) -> tuple[str, int]:
    return ("F" if rng.random() < p_female else "M"), int(np.clip(rng.normal(55, 15), lo, hi))


# ----------------------------------------------------------------------------------------- JSRT + SCR


def write_jsrt(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``All247images/JPC{L,N}N###.IMG`` (raw, big-endian, inverted 12-bit), SCR masks (GIF, half
    resolution) in ``scratch/fold{1,2}/masks/<structure>/`` (odd numbers fold1, even fold2), and
    ``CLNDAT_EN.txt`` / ``CNNDAT_EN.txt`` (tab-separated; nodule x, y in 2048-pixel coordinates)."""
    root = folder
    site = SEG_SITES["jsrt"]
    n_nod = int(np.clip(round(n * 154 / 247), 2, n - 2))
    scale = JSRT_SIDE / size
    cln, cnn = [], []
    for i in range(n):
        nodule = i < n_nod
        num = i + 1 if nodule else i - n_nod + 1
        stem = f"JPC{'L' if nodule else 'N'}N{num:03d}"
        sex, age = _sex_age(rng, 0.5, 16, 89)
        aseed = _seed(rng)
        for _ in range(12):  # JSRT images hold one nodule: redraw until the finding made exactly one
            case = Case(sex, "PA", (Finding("nodule", 1.0),) if nodule else (), aseed, _seed(rng))
            drawn = draw_case(case, (size, size), site)
            if not nodule or len(drawn.boxes.get(0, [])) == 1:
                break
        write_jsrt_img(root / "All247images" / f"{stem}.IMG", drawn.image)
        fold = 1 if num % 2 else 2
        half = max(16, size // 2)
        for label, mask in structure_masks(case, (half, half)).items():
            _save_mask(root / "scratch" / f"fold{fold}" / "masks" / SCR_FOLDERS[label] / f"{stem}.gif", mask)
        age_txt = "?" if rng.random() < 0.03 else str(age)
        sex_txt = "male" if sex == "M" else "female"
        if nodule:
            x0, y0, x1, y1 = drawn.boxes[0][0]
            cx, cy = (x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale
            size_mm = max(x1 - x0, y1 - y0) * scale * JSRT_PIXEL_MM
            cln.append("\t".join([f"{stem}.IMG", str(int(rng.integers(1, 6))), f"{size_mm:.0f}", age_txt, sex_txt,
                                  str(int(round(cx))), str(int(round(cy))),
                                  "malignant" if rng.random() < 0.65 else "benign",
                                  ("l.upper lobe", "r.upper lobe", "l.lower lobe", "r.lower lobe")[int(rng.integers(4))],
                                  "lung cancer"]))
        else:
            cnn.append("\t".join([f"{stem}.IMG", age_txt, sex_txt, "non-nodule"]))
    _write_text(root / "CLNDAT_EN.txt", "\r\n".join(cln) + "\r\n")
    _write_text(root / "CNNDAT_EN.txt", "\r\n".join(cnn) + "\r\n")
    return root


# ----------------------------------------------------------------------------------------- Montgomery


def write_montgomery(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``MontgomerySet/CXR_png/MCUCXR_####_{0,1}.png`` (4020x4892 aspect, either orientation),
    ``ManualMask/{left,right}Mask/*.png`` (full resolution, 0/255) and ``ClinicalReadings/*.txt``."""
    root = folder / "MontgomerySet"
    site = SEG_SITES["montgomery"]
    n_tb = int(np.clip(round(n * 58 / 138), 2, n - 2))
    long_side = int(round(size * 4892 / 4020))
    tb_flags = rng.permutation([1] * n_tb + [0] * (n - n_tb))
    for i, tb in enumerate(tb_flags, start=1):
        stem = f"MCUCXR_{i:04d}_{int(tb)}"
        sex, age = _sex_age(rng, 0.55, 17, 89)
        side = ("R", "L", "B")[int(rng.integers(3))]
        findings = (Finding("tuberculosis", 1.0, side),) if tb else ()
        case = Case(sex, "PA", findings, _seed(rng), _seed(rng))
        shape = (long_side, size) if rng.random() < 0.5 else (size, long_side)
        _save_png(root / "CXR_png" / f"{stem}.png", draw_case(case, shape, site).image)
        masks = structure_masks(case, shape)
        _save_mask(root / "ManualMask" / "leftMask" / f"{stem}.png", masks["Left Lung"])
        _save_mask(root / "ManualMask" / "rightMask" / f"{stem}.png", masks["Right Lung"])
        reading = "normal" if not tb else {"R": "right upper TB", "L": "left upper TB", "B": "bilateral TB"}[side]
        _write_text(root / "ClinicalReadings" / f"{stem}.txt",
                    f"Patient's Sex: {sex}\nPatient's Age: {age:03d}Y\n{reading}\n")
    return root


# ----------------------------------------------------------------------------------------- VinDr-RibCXR


def write_vindr_ribcxr(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``Data/{train,val}/img/VinDr_RibCXR_<split>_###.png`` and ``Data/<split>/Vindr_RibCXR_<split>_mask.json``
    (column-oriented: ``img`` and ``R1..R10``, ``L1..L10`` as ``{"x", "y"}`` point lists)."""
    root = folder
    site = SEG_SITES["vindr_ribcxr"]
    n_val = int(np.clip(round(n * 49 / 245), 1, n - 1))
    shapes = [(int(round(1.2 * size)), size), (size, size), (int(round(1.1 * size)), int(round(1.15 * size)))]
    for split, count in (("train", n - n_val), ("val", n_val)):
        table: dict[str, dict[str, object]] = {"img": {}} | {k: {} for k in RIB_LABELS}
        for j in range(count):
            name = f"VinDr_RibCXR_{split}_{j:03d}.png"
            sex, _ = _sex_age(rng)
            case = Case(sex, "PA", (), _seed(rng), _seed(rng))
            shape = shapes[int(rng.integers(len(shapes)))]
            _save_png(root / "Data" / split / "img" / name, draw_case(case, shape, site).image)
            ribs = rib_polygons(case, shape)
            key = str(j)
            table["img"][key] = f"data/{split}/img/{name}"
            for label in RIB_LABELS:
                flat = ribs.get(label)
                table[label][key] = (None if flat is None else
                                     [{"x": flat[q], "y": flat[q + 1]} for q in range(0, len(flat), 2)])
        _write_text(root / "Data" / split / f"Vindr_RibCXR_{split}_mask.json", json.dumps(table))
    return root


# ----------------------------------------------------------------------------------------- CheXmask


def _rle(mask: np.ndarray) -> str:
    from ..data.masks import rle_encode_chexmask

    return rle_encode_chexmask(mask)


def write_chexmask(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``OriginalResolution/ChestX-Ray8.csv`` (CheXmask columns, RLE masks) and the matching images in
    ChestX-ray8's layout under ``ChestX-Ray8/images_001/images/NNNNNNNN_NNN.png`` (found by name from root).
    About 15% of rows have a low ``Dice RCA (Mean)`` and masks shifted off the anatomy, as a bad
    segmentation would be, so the quality filter has something to drop."""
    root = folder
    site = SEG_SITES["chexmask"]
    header = ["Image Index", "Dice RCA (Max)", "Dice RCA (Mean)", "Landmarks", "Left Lung", "Right Lung", "Heart",
              "Height", "Width"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    count, patient = 0, 0
    while count < n:
        patient += 1
        sex, _ = _sex_age(rng)
        aseed = _seed(rng)
        for follow in range(min(int(rng.integers(1, 4)), n - count)):
            name = f"{patient:08d}_{follow:03d}.png"
            case = Case(sex, "PA", (), aseed, _seed(rng))
            _save_png(root / "ChestX-Ray8" / "images_001" / "images" / name, draw_case(case, (size, size), site).image)
            masks = structure_masks(case, (size, size))
            bad = rng.random() < 0.15
            if bad:
                shift = int(round(0.25 * size))
                masks = {k: np.roll(np.roll(m, shift, axis=1), shift // 2, axis=0) for k, m in masks.items()}
                dice_mean = rng.uniform(0.35, 0.65)
            else:
                dice_mean = rng.uniform(0.75, 0.95)
            dice_max = min(1.0, dice_mean + rng.uniform(0.01, 0.05))
            marks = []
            for k in ("Right Lung", "Left Lung", "Heart"):
                ys, xs = np.nonzero(masks[k])
                marks += [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
            writer.writerow([name, f"{dice_max:.4f}", f"{dice_mean:.4f}", ",".join(map(str, marks)),
                             _rle(masks["Left Lung"]), _rle(masks["Right Lung"]), _rle(masks["Heart"]), size, size])
            count += 1
    _write_text(root / "OriginalResolution" / "ChestX-Ray8.csv", buf.getvalue())
    return root


# ----------------------------------------------------------------------------------------- mask folder


def write_mask_folder(folder: Path, rng: np.random.Generator, n: int, size: int) -> Path:
    """``{train,val,test}/images/case_####.png`` and ``{train,val,test}/masks/<label>/case_####.png``."""
    root = folder
    site = SEG_SITES["mask_folder"]
    splits = np.array(["train"] * n, dtype=object)
    n_val, n_test = max(1, round(0.1 * n)), max(1, round(0.2 * n))
    splits[n - n_val - n_test:n - n_test] = "val"
    splits[n - n_test:] = "test"
    splits = rng.permutation(splits)
    for i, split in enumerate(splits):
        name = f"case_{i:04d}.png"
        sex, _ = _sex_age(rng)
        case = Case(sex, "PA", (), _seed(rng), _seed(rng))
        shape = (size, size)
        _save_png(root / split / "images" / name, draw_case(case, shape, site).image)
        for label, mask in structure_masks(case, shape).items():
            _save_mask(root / split / "masks" / label / name, mask)
    return root


#: adapter name -> writer(folder, rng, n, size) -> dataset root
WRITERS: dict = {
    "jsrt": write_jsrt,
    "montgomery": write_montgomery,
    "vindr_ribcxr": write_vindr_ribcxr,
    "chexmask": write_chexmask,
    "mask_folder": write_mask_folder,
}
