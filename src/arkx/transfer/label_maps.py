"""Declared label maps for zero-shot transfer: which label of a pretrained head scores which label of a target dataset.

A map is ``{target label: source label}``: the target dataset's label (as its adapter names it) is scored by
the probability of the source head's label. A source value may also be a list of spellings, tried in order,
because the authors' released heads spell a few labels differently from arkx's adapters (Shenzhen ``TB`` vs
``Tuberculosis``, RSNA ``No Lung Opacity/Not Normal``): the first spelling the head has is used.

Shipped maps are named ``<source head>_to_<target dataset>`` and pair only labels that name the same finding
(NIH ``Effusion`` is CheXpert's ``Pleural Effusion``). Findings that only overlap (NIH ``Infiltration``,
CheXpert ``Lung Lesion``) are left out on purpose: a map declares an equivalence, and the AUC it reports is
only meaningful when it is one. Users pass their own as a dict or a YAML file of the same shape
(either the mapping itself, or ``{labels: {...}}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Union

from ..errors import ArkxFileNotFoundError, ArkxValueError

Spelling = Union[str, list]

# CheXpert and MIMIC-CXR heads share the CheXpert labeler's 14 names.
_CHEXPERT_TO_NIH14 = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax", "Consolidation": "Consolidation", "Edema": "Edema",
}
_NIH14_TO_CHEXPERT = {chexpert: nih for nih, chexpert in _CHEXPERT_TO_NIH14.items()}
_CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices")
_SAME_14 = {name: name for name in _CHEXPERT_LABELS}
# VinDr-CXR's global labels (the default `labels: global6` option) and its local ones (`labels: all28`).
_CHEXPERT_TO_VINDR = {"Pneumonia": "Pneumonia", "No finding": "No Finding"}
_CHEXPERT_TO_VINDR_ALL28 = {
    **_CHEXPERT_TO_VINDR, "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation", "Edema": "Edema", "Lung Opacity": "Lung Opacity",
    "Pleural effusion": "Pleural Effusion", "Pneumothorax": "Pneumothorax"}
_NIH14_TO_VINDR_ALL28 = {
    "Pneumonia": "Pneumonia", "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation", "Edema": "Edema", "Emphysema": "Emphysema", "Infiltration": "Infiltration",
    "Pleural effusion": "Effusion", "Pleural thickening": "Pleural_Thickening", "Pneumothorax": "Pneumothorax",
    "Pulmonary fibrosis": "Fibrosis"}
_TB = ["Tuberculosis", "TB"]  # arkx's Shenzhen head, the authors' Shenzhen head

#: shipped maps, ``<source head>_to_<target dataset>``: ``{target label: source label (or spellings)}``
LABEL_MAPS: dict[str, dict[str, Spelling]] = {
    "chexpert_to_nih14": dict(_CHEXPERT_TO_NIH14),
    "mimic_cxr_to_nih14": dict(_CHEXPERT_TO_NIH14),
    "nih14_to_chexpert": dict(_NIH14_TO_CHEXPERT),
    "nih14_to_mimic_cxr": dict(_NIH14_TO_CHEXPERT),
    "chexpert_to_mimic_cxr": dict(_SAME_14),
    "mimic_cxr_to_chexpert": dict(_SAME_14),
    # RSNA 3-class target: "Lung Opacity" is the challenge's opacity class; "Normal" is a normal radiograph
    "chexpert_to_rsna": {"Lung Opacity": "Lung Opacity", "Normal": "No Finding"},
    "mimic_cxr_to_rsna": {"Lung Opacity": "Lung Opacity", "Normal": "No Finding"},
    # RSNA 3-class source head: the softmax probability of its "Lung Opacity" class
    "rsna_to_chexpert": {"Lung Opacity": "Lung Opacity"},
    "rsna_to_mimic_cxr": {"Lung Opacity": "Lung Opacity"},
    "chexpert_to_vindr_cxr": dict(_CHEXPERT_TO_VINDR),
    "mimic_cxr_to_vindr_cxr": dict(_CHEXPERT_TO_VINDR),
    "chexpert_to_vindr_cxr_all28": dict(_CHEXPERT_TO_VINDR_ALL28),
    "mimic_cxr_to_vindr_cxr_all28": dict(_CHEXPERT_TO_VINDR_ALL28),
    "nih14_to_vindr_cxr": {"Pneumonia": "Pneumonia"},
    "nih14_to_vindr_cxr_all28": dict(_NIH14_TO_VINDR_ALL28),
    "vindr_cxr_to_chexpert": {"Pneumonia": "Pneumonia", "No Finding": "No finding"},
    "vindr_cxr_to_nih14": {"Pneumonia": "Pneumonia"},
    "shenzhen_to_vindr_cxr": {"Tuberculosis": list(_TB)},
    "vindr_cxr_to_shenzhen": {"Tuberculosis": "Tuberculosis"},
}


def default_map_name(head: str, dataset_type: str) -> str:
    return f"{head}_to_{dataset_type}"


def resolve_label_map(label_map, head: str, dataset_type: str) -> tuple[str, dict[str, Spelling]]:
    """``(where it came from, {target: source spelling(s)})`` from ``None`` (the shipped map for this head and
    dataset), a shipped map's name, a dict, or a YAML file."""
    if label_map is None:
        name = default_map_name(head, dataset_type)
        if name not in LABEL_MAPS:
            raise ArkxValueError(f"no shipped label map {name!r} (head {head!r} -> dataset {dataset_type!r}); pass "
                                 "label_map= (--map) a dict or YAML file; shipped maps: "
                                 f"{', '.join(sorted(LABEL_MAPS))}")
        return name, _checked(LABEL_MAPS[name], name)
    if isinstance(label_map, Mapping):
        return "<dict>", _checked(_unwrap(label_map), "<dict>")
    text = str(label_map)
    if text in LABEL_MAPS:
        return text, _checked(LABEL_MAPS[text], text)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return str(path), _checked(_unwrap(_read_yaml(path)), str(path))
    raise ArkxValueError(f"label map {text!r} is neither a shipped map nor a YAML file; shipped maps: "
                         f"{', '.join(sorted(LABEL_MAPS))}")


def _read_yaml(path: Path):
    from ..config import load_yaml_text

    if not path.is_file():
        raise ArkxFileNotFoundError(f"no label map file {path}")
    return load_yaml_text(path.read_text(encoding="utf-8"), str(path))


def _unwrap(data):
    if isinstance(data, Mapping) and set(data) == {"labels"} and isinstance(data["labels"], Mapping):
        return data["labels"]
    return data


def _checked(data, where: str) -> dict[str, Spelling]:
    """A map whose keys are target label names and values a source name or a non-empty list of names."""
    if not isinstance(data, Mapping) or not data:
        raise ArkxValueError(f"label map {where}: expected a non-empty mapping of target label -> source label, "
                             f"got {type(data).__name__}")
    out: dict[str, Spelling] = {}
    for target, source in data.items():
        spellings = source if isinstance(source, (list, tuple)) else [source]
        if not spellings or not all(isinstance(s, str) and s for s in spellings) or not isinstance(target, str):
            raise ArkxValueError(f"label map {where}: entry {target!r}: {source!r}; expected a label name "
                                 "(or a list of spellings) for each target label name")
        out[target] = list(spellings) if isinstance(source, (list, tuple)) else source
    return out


def match_labels(label_map: dict[str, Spelling], source_names, target_names, head: str,
                 dataset: str) -> list[tuple[str, str]]:
    """``[(target label, source label)]`` in map order, every name checked against the head and the dataset."""
    source_names, target_names = tuple(source_names), tuple(target_names)
    pairs = []
    for target, source in label_map.items():
        if target not in target_names:
            raise ArkxValueError(f"label map: target label {target!r} is not a label of dataset {dataset!r}; "
                                 f"its labels: {', '.join(target_names)}")
        spellings = source if isinstance(source, list) else [source]
        found = next((s for s in spellings if s in source_names), None)
        if found is None:
            raise ArkxValueError(f"label map: source label {' / '.join(map(repr, spellings))} (for {target!r}) is "
                                 f"not a label of head {head!r}; its labels: {', '.join(source_names)}")
        pairs.append((target, found))
    return pairs
