"""Bootstrap confidence intervals resampled by patient.

Images of one patient are not independent (several views, several studies, the same anatomy), so a
bootstrap that draws images treats a patient's ten near-copies as ten pieces of evidence and gives a CI
that is too narrow. Here a resample draws *patients* with replacement and takes all the images of each
drawn patient (a patient drawn twice contributes its images twice): the cluster bootstrap.

Conventions (checked by tests/evaluation/test_bootstrap.py):

- percentile intervals: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled
  statistic (CheXzero's protocol: 1,000 resamples, 2.5 / 97.5 percentiles, fixed seed);
- a statistic undefined in a resample (NaN: a label with one class only among the drawn images) is left
  out of that component's quantiles, and the number of such resamples is reported per component;
- the same seed gives the same draws, whatever the statistic (so two metrics of one call are paired).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ArkxValueError

#: CheXzero's protocol: resamples and confidence level
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class PatientIndex:
    """Images grouped by patient, for drawing whole patients fast.

    ``order`` lists image positions sorted by patient; patient ``p``'s images are
    ``order[starts[p]:starts[p] + counts[p]]``.
    """

    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @property
    def n_patients(self) -> int:
        return len(self.counts)

    @property
    def n_images(self) -> int:
        return len(self.order)

    @classmethod
    def from_ids(cls, patient_ids: Sequence) -> PatientIndex:
        """Group image positions by ``patient_ids`` (one id per image; any hashable values, compared as text)."""
        ids = np.asarray(patient_ids).astype(str)
        if ids.ndim != 1 or not len(ids):
            raise ArkxValueError(f"bootstrap: expected one patient id per image, got an array of shape {ids.shape}")
        _, codes, counts = np.unique(ids, return_inverse=True, return_counts=True)
        order = np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return cls(order=order, starts=starts, counts=counts)

    @classmethod
    def per_image(cls, n: int) -> PatientIndex:
        """Every image its own patient (the plain image bootstrap)."""
        return cls(order=np.arange(n), starts=np.arange(n), counts=np.ones(n, dtype=np.int64))

    def draw(self, rng: np.random.Generator, patients: np.ndarray | None = None) -> np.ndarray:
        """Image positions of one resample: patients drawn with replacement (or the given ``patients``),
        all images of each."""
        if patients is None:
            patients = rng.integers(0, self.n_patients, size=self.n_patients)
        lengths = self.counts[patients]
        total = int(lengths.sum())
        # position j of the output belongs to the k-th drawn patient: start_k + (j - first output slot of k)
        first_slot = np.cumsum(lengths) - lengths
        offsets = np.arange(total) - np.repeat(first_slot, lengths)
        return self.order[np.repeat(self.starts[patients], lengths) + offsets]


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimates and percentile CIs of a vector statistic.

    Attributes:
        point, low, high: arrays ``[k]`` (NaN where undefined).
        undefined: ``[k]`` resamples in which the component was NaN (left out of its quantiles).
        n_resamples, level, n_patients: how the CIs were made.
        draws: ``[n_resamples, k]`` the resampled values (kept for paired comparisons and plots).
    """

    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    undefined: np.ndarray
    n_resamples: int
    level: float
    n_patients: int
    draws: np.ndarray


def percentile_interval(draws: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(low, high, undefined)`` per column of ``draws [n_resamples, k]`` over its non-NaN values."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim == 1:
        draws = draws[:, None]
    k = draws.shape[1]
    low, high = np.full(k, np.nan), np.full(k, np.nan)
    undefined = np.isnan(draws).sum(axis=0).astype(np.int64)
    q = ((1 - level) / 2 * 100, (1 + level) / 2 * 100)
    for j in range(k):
        column = draws[:, j][~np.isnan(draws[:, j])]
        if column.size:
            low[j], high[j] = np.percentile(column, q)
    return low, high, undefined


def patient_bootstrap(statistic: Callable[[np.ndarray], np.ndarray], patient_ids: Sequence | None, *,
                      n_images: int | None = None, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                      level: float = DEFAULT_LEVEL) -> BootstrapResult:
    """Percentile CIs of ``statistic(image positions) -> values [k]`` by resampling patients.

    ``statistic`` receives the positions of the resample's images (with repeats) and returns a vector (NaN
    where undefined); the point estimate is ``statistic(arange(n))``. ``patient_ids=None`` resamples images
    (then ``n_images`` is required): only for data without patient ids.
    """
    if n_resamples < 1:
        raise ArkxValueError(f"bootstrap: n_resamples must be >= 1, got {n_resamples}")
    if not 0 < level < 1:
        raise ArkxValueError(f"bootstrap: level must be in (0, 1), got {level}")
    index = PatientIndex.from_ids(patient_ids) if patient_ids is not None else PatientIndex.per_image(int(n_images))
    point = np.atleast_1d(np.asarray(statistic(np.arange(index.n_images)), dtype=np.float64))
    rng = np.random.default_rng(seed)
    draws = np.empty((n_resamples, len(point)))
    for b in range(n_resamples):
        draws[b] = statistic(index.draw(rng))
    low, high, undefined = percentile_interval(draws, level)
    return BootstrapResult(point, low, high, undefined, n_resamples, level, index.n_patients, draws)


def bootstrap_p_value(draws: np.ndarray) -> np.ndarray:
    """Two-sided bootstrap p-value of "the statistic is 0" per column of ``draws`` (e.g. a paired difference):
    twice the smaller share of resamples on either side of 0 (at most 1; NaN draws left out).

    With B resamples the smallest p reported is ``2 / B``-ish, never 0: a p-value of 0 from finite
    resampling would claim more than it knows, so it is floored at ``1 / (B + 1)``."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim == 1:
        draws = draws[:, None]
    out = np.full(draws.shape[1], np.nan)
    for j in range(draws.shape[1]):
        column = draws[:, j][~np.isnan(draws[:, j])]
        if column.size:
            below, above = (column <= 0).mean(), (column >= 0).mean()
            out[j] = min(1.0, max(2 * min(below, above), 1 / (column.size + 1)))
    return out
