"""What the drawer draws: the finding concepts, one :class:`Finding`, one :class:`Case` (everything needed
to draw one image deterministically), the acquisition look of a dataset (:class:`Site`) and the result
(:class:`Drawn`: the image and, per finding, the components it drew as box and region mask)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Every finding concept the drawer knows. Dataset labels map onto these (see ``arkx.synth.LABEL_CONCEPTS``).
CONCEPTS = (
    "opacity",  # patchy air-space opacity (infiltration, lung opacity, pneumonia, RSNA opacity)
    "consolidation",  # dense homogeneous patch with air bronchograms
    "effusion",  # bright fluid with a meniscus at a lung base
    "pneumothorax",  # dark apical/lateral rim without lung markings, visible pleural line
    "nodule",  # small round dense blob
    "mass",  # large lobulated dense blob
    "edema",  # bilateral perihilar haze
    "atelectasis",  # linear (plate-like) dense band in a lower zone
    "cardiomegaly",  # wide heart
    "wide_mediastinum",  # wide upper mediastinum
    "aortic_enlargement",  # bulging aortic knob
    "enlarged_pa",  # bulging left hilum
    "mediastinal_shift",  # heart and mediastinum displaced sideways
    "emphysema",  # hyperlucent large lungs, flat low diaphragm, sparse markings
    "fibrosis",  # reticular (net-like) texture in the lower/peripheral lungs
    "pleural_thickening",  # bright band along the lateral chest wall
    "rib_fracture",  # discontinuity and step in one rib
    "clavicle_fracture",  # discontinuity and step in one clavicle
    "devices",  # tubes, lines and a pacemaker: very bright thin curves
    "hernia",  # retrocardiac round opacity with an air-fluid level
    "tuberculosis",  # upper-zone patches with cavities and streaks
    "cavity",  # thick-walled ring with a dark centre
    "cyst",  # thin-walled dark round space
    "calcification",  # cluster of tiny very bright dots
    "other_lesion",  # small spiculated star-shaped density
)

#: concepts that change the anatomy instead of (only) adding density
STRUCTURAL = frozenset(
    {"cardiomegaly", "wide_mediastinum", "mediastinal_shift", "emphysema", "rib_fracture", "clavicle_fracture"}
)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Finding:
    """One finding to draw. ``side``: ``"R"`` (patient right, image left), ``"L"``, ``"B"`` or None (random)."""

    concept: str
    strength: float = 1.0
    side: str | None = None

    def __post_init__(self) -> None:
        if self.concept not in CONCEPTS:
            raise ValueError(f"unknown finding concept {self.concept!r}")


@dataclass(frozen=True)
class Case:
    """Everything needed to draw one image deterministically."""

    sex: str = "M"  # "M", "F" or anything else (drawn as a random one of the two)
    view: str = "PA"  # "PA", "AP" or "LATERAL"
    findings: tuple[Finding, ...] = ()
    anatomy_seed: int = 0  # same for all images of one patient
    seed: int = 0  # this image: finding placement, texture, noise


@dataclass(frozen=True)
class Site:
    """Acquisition look of one dataset (constant within the dataset)."""

    name: str
    gamma: float = 1.0
    contrast: float = 1.0
    offset: float = 0.0
    noise: float = 0.02
    blur: float = 0.5  # gaussian sigma in pixels of a 128-px image (scaled with the image)
    border: float = 0.0  # collimation border as a fraction of the side (left/right)
    border_top: float = 0.0
    border_value: float = 0.0
    marker: str | None = "tr"  # corner of the burned-in text block: tl, tr, bl, br or None
    marker_seed: int = 0
    exposure_jitter: float = 0.04


@dataclass
class Drawn:
    """A drawn image (float32 in [0, 1], ``h x w``) and, per finding (index in ``Case.findings``), its drawn
    components as (box, region mask): localization and segmentation layouts write exactly these."""

    image: np.ndarray
    components: dict[int, list[tuple[Box, np.ndarray]]] = field(default_factory=dict)
    female: bool = False

    @property
    def boxes(self) -> dict[int, list[Box]]:
        return {i: [b for b, _ in comps] for i, comps in self.components.items()}

    def mask(self, i: int) -> np.ndarray:
        """Union of the regions of finding ``i`` (all False if it drew nothing)."""
        out = np.zeros(self.image.shape, dtype=bool)
        for _, m in self.components.get(i, []):
            out |= m
        return out


def demo_case(concepts: tuple[str, ...], sex: str = "M", view: str = "PA", seed: int = 0) -> Case:
    """A case with the given concepts at full strength (for looking at the drawings)."""
    return Case(sex=sex, view=view, findings=tuple(Finding(k) for k in concepts), anatomy_seed=seed, seed=seed + 1)
