"""The engine's evaluation of every pretraining task on a split, sharded over the ranks of a multi-process
job and gathered so each score is computed on the whole split."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from ..data.loaders import make_loader
from ..evaluation.metrics import task_auc
from ..evaluation.predict import predict_head, predict_task
from ..tasks import Task, get_kind
from .distributed import gather_objects


class TaskEvaluation:
    """A mixin of :class:`~arkx.training.engine.Engine` (it reads ``cfg``, ``datasets``, ``tasks``, the models,
    ``device``, ``autocast``, ``dist`` and the ``eval_loaders`` cache)."""

    def _eval_loader(self, name: str, split: str, task: Task | None = None) -> DataLoader:
        targets = tuple(get_kind(task.kind).loader_targets) if task is not None else ("labels",)
        key = (name, split, targets)
        if key not in self.eval_loaders:
            d = self.cfg.data
            self.eval_loaders[key] = make_loader(self.datasets[name], split, d.eval_batch_size, d.workers,
                                                 train=False, pin_memory=self.device.type == "cuda", targets=targets,
                                                 shard=self._shard)
        return self.eval_loaders[key]  # None: this rank's part of the split is empty

    def evaluate_tasks(self, split: str, models: list[str]) -> list[tuple[str, str, Task, Any]]:
        """``(model, dataset, task, score)`` for every pretraining task of every dataset on one split, whichever
        task the last step trained (Foundation X's focused and unfocused curves): AUC for classification
        (:class:`~arkx.evaluation.metrics.AucResult`), mAP40 and Dice for the others (:class:`~arkx.tasks.TaskScore`)."""
        size, autocast, channels_last = self.cfg.data.image_size, self.autocast, self.cfg.training.channels_last
        results = []
        for model_name in models:
            model = self.student if model_name == "student" else self.teacher
            for name, ds in self.datasets.items():
                if len(ds.indices(split)) == 0:
                    continue
                for task in self.tasks[name]:
                    loader = self._eval_loader(name, split, task)
                    if task.is_classification:
                        local = ([], [])
                        if loader is not None:
                            scores, targets, _ = predict_head(model, loader, name, task.kind, self.device, size,
                                                              autocast, channels_last)
                            local = ([scores], [targets])
                        scores, targets = self._gathered(local)
                        result = task_auc(task.kind, np.concatenate(scores), np.concatenate(targets), task.label_names)
                    else:
                        local = ([], [])
                        if loader is not None:
                            local = predict_task(model, loader, task, self.device, size, autocast, channels_last)
                        result = get_kind(task.kind).score(*self._gathered(local), task)
                    results.append((model_name, name, task, result))
        return results

    def _gathered(self, local: tuple[list, list]) -> tuple[list, list]:
        """Predictions and targets of every rank's part of a split, in rank order (the split's order); this
        rank's own in a single-process run. Every rank gets them all and scores them alike."""
        parts = gather_objects(local, self.dist)
        return [p for predictions, _ in parts for p in predictions], [t for _, targets in parts for t in targets]

    def evaluate(self, split: str, models: list[str]) -> dict[str, dict[str, Any]]:
        """``{model: {dataset: AucResult}}`` of the classification tasks on one split of every dataset."""
        results: dict[str, dict[str, Any]] = {m: {} for m in models}
        for model_name, name, task, result in self.evaluate_tasks(split, models):
            if task.is_classification:
                results[model_name][name] = result
        return results
