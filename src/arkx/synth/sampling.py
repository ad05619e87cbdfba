"""Random draws every provider shares: per-image seeds, demographics, the latent truth of a dataset
(prevalences, normal images, at least ``MIN_POSITIVES`` positives of every label in every split), what a
report labeler or a text miner records from it (label noise, drawn from a stream of its own:
:func:`label_noise_stream`), patient-level split quotas, and the findings drawn for positive labels.
Every function draws from the ``rng`` it is given, in a fixed order: the written datasets depend on that
order, so it must not change."""

from __future__ import annotations

import numpy as np

from .anatomy import Finding

MIN_POSITIVES = 3  # per label and per evaluated split, generation target (tests require >= 2)


def draw_seed(rng: np.random.Generator) -> int:
    """A seed for :class:`~arkx.synth.anatomy.Case` (anatomy or image), drawn from ``rng``."""
    return int(rng.integers(0, 2**62))


def sex_age(rng, p_female=0.45, lo=18, hi=90) -> tuple[str, int]:
    """Sex (``F`` with probability ``p_female``) and age (mean 58, sd 17, clipped to ``[lo, hi]``)."""
    return ("F" if rng.random() < p_female else "M"), int(np.clip(rng.normal(58, 17), lo, hi))


def sex_age_seg(rng, p_female: float = 0.5, lo: int = 18, hi: int = 85) -> tuple[str, int]:
    """Sex and age as the segmentation layouts draw them (mean age 55, sd 15)."""
    return ("F" if rng.random() < p_female else "M"), int(np.clip(rng.normal(55, 15), lo, hi))


def sample_truth(rng, n: int, prev: list[float], normal_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Latent truth ``T[n, L]`` and the normal flag (no finding at all) of ``n`` units."""
    p = np.asarray(prev, dtype=float)
    cond = np.minimum(p / (1.0 - normal_frac), 0.6)
    normal = rng.random(n) < normal_frac
    T = rng.random((n, len(p))) < cond
    T[normal] = False
    for i in np.flatnonzero(~normal & ~T.any(axis=1)):
        T[i, rng.choice(len(p), p=cond / cond.sum())] = True
    return T, normal


def ensure_truth(rng, T: np.ndarray, normal: np.ndarray, groups: np.ndarray, k: int = MIN_POSITIVES) -> None:
    """In place: each group gets >= k normal units and >= k positive units of every label (best effort)."""
    for gname in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == gname)
        need = k - int(normal[idx].sum())
        if need > 0:
            cands = rng.permutation(idx[~normal[idx]])
            # prefer units with a single finding, so label counts suffer least
            cands = cands[np.argsort(T[cands].sum(axis=1), kind="stable")]
            for u in cands[:need]:
                normal[u] = True
                T[u] = False
        for j in range(T.shape[1]):
            need = k - int(T[idx, j].sum())
            if need > 0:
                cands = rng.permutation(idx[~normal[idx] & ~T[idx, j]])
                T[cands[:need], j] = True


def ensure_observed(rng, obs: np.ndarray, T: np.ndarray, groups: np.ndarray, k: int = MIN_POSITIVES) -> None:
    """In place: each group has >= k units recorded positive (1.0) for every label whose truth allows it."""
    for gname in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == gname)
        for j in range(obs.shape[1]):
            need = k - int((obs[idx, j] == 1.0).sum())
            if need > 0:
                cands = rng.permutation(idx[T[idx, j] & (obs[idx, j] != 1.0)])
                obs[cands[:need], j] = 1.0


def observe_labeler(rng, T: np.ndarray, normal: np.ndarray, p_pos=(0.75, 0.15), p_neg=(0.25, 0.05)) -> np.ndarray:
    """What a report labeler records: positives 1.0 / -1.0 / blank, negatives 0.0 / -1.0 / blank."""
    r = rng.random(T.shape)
    pos = np.where(r < p_pos[0], 1.0, np.where(r < p_pos[0] + p_pos[1], -1.0, np.nan))
    neg = np.where(r < p_neg[0], 0.0, np.where(r < p_neg[0] + p_neg[1], -1.0, np.nan))
    neg[normal] = np.where(r[normal] < p_neg[0], 0.0, np.nan)
    return np.where(T, pos, neg)


def label_noise_stream(rng: np.random.Generator) -> np.random.Generator:
    """An independent stream for label noise, spawned from ``rng`` without drawing from it: the images a
    writer draws afterwards stay exactly those it drew before label noise was modelled."""
    return rng.spawn(1)[0]


def mine_text_labels(rng, T: np.ndarray, normal: np.ndarray, groups: np.ndarray, p_miss: float = 0.10,
                     p_false: float = 0.005, k: int = MIN_POSITIVES) -> np.ndarray:
    """What a report text-miner records from the truth ``T``: each present finding is missed with
    probability ``p_miss``, each absent one mentioned with probability ``p_false`` (bool array like ``T``).

    Best effort per group, as :func:`ensure_truth`: >= k recorded positives of every label (restored from
    missed true positives) and >= k images recorded with no finding (spurious mentions on normal images
    removed)."""
    r = rng.random(T.shape)
    rec = np.where(T, r >= p_miss, r < p_false)
    obs = rec.astype(float)
    ensure_observed(rng, obs, T, groups, k)
    rec = obs == 1.0
    for gname in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == gname)
        need = k - int((~rec[idx].any(axis=1)).sum())
        if need > 0:
            for u in rng.permutation(idx[normal[idx] & rec[idx].any(axis=1)])[:need]:
                rec[u] = False
    return rec


def split_by_quota(rng, n: int, fractions: dict[str, float]) -> np.ndarray:
    """Assign ``n`` patients to splits with (rounded) quotas, shuffled."""
    names = list(fractions)
    counts = [int(round(fractions[s] * n)) for s in names[1:]]
    counts = [max(1, c) if n >= 2 * len(names) else c for c in counts]
    first = n - sum(counts)
    labels = np.array(sum(([s] * c for s, c in zip(names, [first] + counts)), []), dtype=object)
    return rng.permutation(labels)


def groups_for(units_per_patient: list[int], rng, fractions: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level split (quota-shuffled) and the split of every unit, in patient order."""
    split_of_patient = split_by_quota(rng, len(units_per_patient), fractions)
    groups = np.array([split_of_patient[p] for p, k in enumerate(units_per_patient) for _ in range(k)], dtype=object)
    return split_of_patient, groups


def sample_positive(rng, n: int, p: float, k: int = 3) -> np.ndarray:
    """Which of ``n`` images are positive (probability ``p``), with at least ``min(k, n // 2)`` of each kind."""
    pos = rng.random(n) < p
    need = min(k, n // 2) - int(pos.sum())
    if need > 0:
        pos[rng.permutation(np.flatnonzero(~pos))[:need]] = True
    need = min(k, n // 2) - int((~pos).sum())
    if need > 0:
        pos[rng.permutation(np.flatnonzero(pos))[:need]] = False
    return pos


def findings_for(rng, positives: list[tuple[str, float]], table: dict[str, tuple[str, ...]]):
    """Findings for positive labels ``(label, strength)``; returns the findings and the label of each."""
    out, owners = [], []
    for label, strength in positives:
        options = table[label]
        concept = options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]
        out.append(Finding(concept, float(strength)))
        owners.append(label)
    return tuple(out), owners
