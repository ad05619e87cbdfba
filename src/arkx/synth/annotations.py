"""From a drawn case to what localization and segmentation layouts write: the boxes of each dataset
label, the (label, box, mask) components of a labelled drawing (:class:`SynthImage`, which the
``generate_<name>`` functions of the localization providers return, so tests can compare an
adapter's output with what was drawn), and the same case with some findings made invisible."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .anatomy import Box, Case, Finding, Site, draw_case


def boxes_by_label(drawn, owners: list[str]) -> dict[str, list[Box]]:
    """Boxes of a drawing grouped by label, finding ``i`` belonging to label ``owners[i]``."""
    out: dict[str, list[Box]] = {}
    for i, label in enumerate(owners):
        for b in drawn.boxes.get(i, []):
            out.setdefault(label, []).append(b)
    return out


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


def draw_labelled(case: Case, owners: list[str | None], shape, site: Site) -> tuple[np.ndarray, list]:
    """Draw ``case``; the components of finding ``i`` belong to label ``owners[i]`` (None = unlabelled)."""
    drawn = draw_case(case, shape, site)
    out = []
    for i, owner in enumerate(owners):
        if owner is None:
            continue
        for box, m in drawn.components.get(i, []):
            out.append((owner, box, m))
    return drawn.image, out


def zero_strength(case: Case, concepts: set[str]) -> Case:
    """The same case with the findings of ``concepts`` at strength 0 (drawn identically but invisible):
    the difference of the two drawings is what those findings changed."""
    return replace(case, findings=tuple(Finding(f.concept, 0.0, f.side) if f.concept in concepts else f
                                        for f in case.findings))
