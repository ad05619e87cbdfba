"""The synthetic providers: one module per dataset adapter, named as the adapter's module in
:mod:`arkx.data.adapters` (``generic_csv`` writes what the ``csv`` adapter reads, ...). Each writes its
provider's official layout with ``write_<name>(folder, rng, n, size) -> dataset root``, and holds its
label tables (``CONCEPTS_BY_LABEL``: label -> finding concepts drawn; ``PREVALENCE_BY_LABEL``) and its
acquisition look (``SITE``). The localization providers also have ``generate_<name>(rng, n, size)``:
the images a writer writes, with what was drawn. This module gathers them by adapter name.
"""

from __future__ import annotations

from types import ModuleType

from . import (
    candid_ptx,
    chestdr,
    chestx_det,
    chexmask,
    chexpert,
    covidx,
    cxr_lt,
    generic_coco,
    generic_csv,
    generic_folder,
    generic_mask_folder,
    jsrt,
    mimic_cxr,
    montgomery,
    nih14,
    node21,
    pediatric_pneumonia,
    rsna,
    shenzhen,
    siim_acr,
    tbx11k,
    vindr_cxr,
    vindr_ribcxr,
)

#: adapter name -> writer(folder, rng, n, size) -> dataset root: the Ark-6 layouts first, then the
#: classification, localization and segmentation ones
WRITERS: dict = {
    "chexpert": chexpert.write_chexpert,
    "nih14": nih14.write_nih14,
    "rsna": rsna.write_rsna,
    "vindr_cxr": vindr_cxr.write_vindr_cxr,
    "shenzhen": shenzhen.write_shenzhen,
    "mimic_cxr": mimic_cxr.write_mimic_cxr,
    "cxr_lt": cxr_lt.write_cxr_lt,
    "covidx": covidx.write_covidx,
    "pediatric_pneumonia": pediatric_pneumonia.write_pediatric_pneumonia,
    "chestdr": chestdr.write_chestdr,
    "csv": generic_csv.write_generic_csv,
    "folder": generic_folder.write_generic_folder,
    "siim_acr": siim_acr.write_siim_acr,
    "candid_ptx": candid_ptx.write_candid_ptx,
    "tbx11k": tbx11k.write_tbx11k,
    "node21": node21.write_node21,
    "chestx_det": chestx_det.write_chestx_det,
    "coco": generic_coco.write_coco,
    "jsrt": jsrt.write_jsrt,
    "montgomery": montgomery.write_montgomery,
    "vindr_ribcxr": vindr_ribcxr.write_vindr_ribcxr,
    "chexmask": chexmask.write_chexmask,
    "mask_folder": generic_mask_folder.write_mask_folder,
}
#: adapter name -> generator(rng, n, size) -> list[SynthImage] (what the writer writes, in order)
GENERATORS: dict = {
    "siim_acr": siim_acr.generate_siim_acr,
    "candid_ptx": candid_ptx.generate_candid_ptx,
    "tbx11k": tbx11k.generate_tbx11k,
    "node21": node21.generate_node21,
    "chestx_det": chestx_det.generate_chestx_det,
    "coco": generic_coco.generate_coco,
}

#: adapter name -> provider module
MODULES: dict[str, ModuleType] = {
    "chexpert": chexpert, "nih14": nih14, "rsna": rsna, "vindr_cxr": vindr_cxr, "shenzhen": shenzhen,
    "mimic_cxr": mimic_cxr, "cxr_lt": cxr_lt, "covidx": covidx, "pediatric_pneumonia": pediatric_pneumonia,
    "chestdr": chestdr, "csv": generic_csv, "folder": generic_folder, "siim_acr": siim_acr,
    "candid_ptx": candid_ptx, "tbx11k": tbx11k, "node21": node21, "chestx_det": chestx_det, "coco": generic_coco,
    "jsrt": jsrt, "montgomery": montgomery, "vindr_ribcxr": vindr_ribcxr, "chexmask": chexmask,
    "mask_folder": generic_mask_folder,
}  # fmt: skip
#: adapter name -> (dataset label -> finding concepts drawn for a positive), for the datasets with such a table
LABEL_CONCEPTS: dict[str, dict[str, tuple[str, ...]]] = {
    name: m.CONCEPTS_BY_LABEL for name, m in MODULES.items() if hasattr(m, "CONCEPTS_BY_LABEL")
}
#: adapter name -> (dataset label -> latent prevalence), for the datasets drawn from prevalences
PREVALENCE: dict[str, dict[str, float]] = {
    name: m.PREVALENCE_BY_LABEL for name, m in MODULES.items() if hasattr(m, "PREVALENCE_BY_LABEL")
}
#: adapter name -> acquisition look
SITES: dict = {name: m.SITE for name, m in MODULES.items()}
