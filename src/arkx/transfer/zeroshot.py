"""Zero-shot transfer (Ark+): score a dataset with a pretrained head whose labels already cover it, no training.

Through a declared label map (:mod:`arkx.transfer.label_maps`, ``{target label: source head label}``), each
target label is scored by the probability the source head gives its mapped label: the sigmoid of that logit
for a multilabel head, the softmax probability of that class for a multiclass head (RSNA's 3 classes). Images
are read exactly as training reads them (the prepared cache and the evaluation view, through
:func:`arkx.embed`), and the head is applied to the embedding it was trained on. AUROC per target label
comes from :mod:`arkx.evaluation.metrics` (NaN and uncertain -1 targets are left out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArkxValueError
from .label_maps import match_labels, resolve_label_map


@dataclass
class ZeroShotResult:
    """Per-target-label AUROC of a head applied through a label map.

    Attributes:
        head, dataset: source head name and target dataset (adapter) name.
        pairs: ``[(target label, source label)]`` as scored.
        auc: :class:`arkx.evaluation.metrics.AucResult` over the target labels of ``pairs``.
        ids: image ids scored; scores and targets ``[N, len(pairs)]`` in ``pairs`` order.
        meta: model, map source, splits, sizes.
    """

    head: str
    dataset: str
    pairs: list[tuple[str, str]]
    auc: Any
    ids: np.ndarray
    scores: np.ndarray
    targets: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def mean_auc(self) -> float:
        return self.auc.mean

    def frame(self):
        """One row per mapped label: target, source, AUC, positives, negatives."""
        import pandas as pd

        return pd.DataFrame(dict(
            target_label=[t for t, _ in self.pairs], source_label=[s for _, s in self.pairs],
            auc=self.auc.per_label, n_positive=self.auc.n_positive, n_negative=self.auc.n_negative))

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(path, index=False)
        return path

    def format_table(self) -> str:
        lines = [f"zero-shot {self.head} head -> {self.dataset} ({len(self.ids)} images, "
                 f"split {'+'.join(self.meta.get('splits') or ['all'])}, map {self.meta.get('label_map')})",
                 f"{'target label':<28} {'source label':<28} {'AUC':>6} {'pos':>5} {'neg':>5}"]
        for (target, source), auc, pos, neg in zip(self.pairs, self.auc.per_label, self.auc.n_positive,
                                                   self.auc.n_negative):
            shown = "   n/a" if np.isnan(auc) else f"{auc:6.3f}"
            lines.append(f"{target:<28} {source:<28} {shown} {int(pos):>5} {int(neg):>5}")
        lines.append(f"{'mean':<57} {self.mean_auc:6.3f}")
        return "\n".join(lines)


def zeroshot(model_or_path, head: str, dataset_type: str, root: str | Path, *, label_map=None,
             splits: list[str] | tuple[str, ...] | None = ("test",), options: dict | None = None,
             which: str = "teacher", batch_size: int = 64, device: str = "auto", cache_dir: str | Path | None = None,
             image_size: int | None = None, cache_size: int | None = None, out: str | Path | None = None,
             progress: bool = True, workers: int = 0) -> ZeroShotResult:
    """Apply head ``head`` of a trained model to a dataset through a label map; AUROC per mapped target label.

    Args:
        model_or_path: as for :func:`arkx.embed` (run folder, export, ``last.pt``, or an ArkModel with
            ``image_size=``).
        head: the source head (e.g. ``chexpert``).
        dataset_type, root, options: the target dataset, as for :func:`arkx.read_dataset`.
        label_map: ``None`` (the shipped ``<head>_to_<dataset_type>`` map), a shipped map's name, a dict
            ``{target label: source label}``, or a YAML file of that mapping.
        splits: target splits scored (default ``test``; ``None`` = all images).
        out: also write the per-label table there (CSV).
    """
    from ..evaluation.metrics import multilabel_auc
    from .embed import _cache_root, _resolve_model, embed

    model, source, sizes = _resolve_model(model_or_path, which, image_size, cache_size)
    if head not in model.head_specs:
        raise ArkxValueError(f"model has no head {head!r}; its heads: {', '.join(model.head_specs)}")
    spec = model.head_specs[head]
    map_source, mapping = resolve_label_map(label_map, head, dataset_type)
    from ..data.adapters import read_dataset

    target_names = read_dataset(dataset_type, root, **(options or {})).label_names
    pairs = match_labels(mapping, spec.label_names, target_names, head, dataset_type)  # before reading any image
    table = embed(model, dataset_type, root, options=options, which=which, features="projector", splits=splits,
                  batch_size=batch_size, device=device, cache_dir=_cache_root(cache_dir, sizes, out),
                  image_size=sizes.image_size, cache_size=sizes.cache_size, progress=progress, workers=workers)
    probabilities = head_probabilities(model, head, table.embeddings)
    source_cols = [spec.label_names.index(s) for _, s in pairs]
    target_cols = [table.label_names.index(t) for t, _ in pairs]
    scores, targets = probabilities[:, source_cols], table.labels[:, target_cols]
    auc = multilabel_auc(scores, targets, tuple(t for t, _ in pairs))
    result = ZeroShotResult(head, table.meta["dataset"], pairs, auc, table.ids, scores, targets, dict(
        model=source, label_map=map_source, splits=list(splits) if splits else None, image_size=sizes.image_size,
        cache_size=sizes.cache_size, head_kind=spec.kind, excluded=table.meta.get("excluded", [])))
    if out is not None:
        result.to_csv(out)
    return result


def head_probabilities(model, head: str, embeddings: np.ndarray) -> np.ndarray:
    """``[N, labels]`` probabilities of a head on its embeddings: sigmoid (multilabel) or softmax (multiclass)."""
    layer = model.heads[head]
    with torch.inference_mode():
        z = torch.from_numpy(np.asarray(embeddings, dtype=np.float32)).to(next(layer.parameters()).device)
        logits = layer(z).float()
        probs = logits.softmax(dim=1) if model.head_specs[head].kind == "multiclass" else logits.sigmoid()
    return probs.cpu().numpy().astype(np.float64)
