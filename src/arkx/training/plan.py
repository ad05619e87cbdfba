"""What a pretraining run trains, and when: each dataset's tasks in schedule order, and the phases of a step.

Ark trains each dataset's classification task; Foundation X (``training.tasks``) also its localization and
segmentation tasks, one schedule step each, and splits a dense step into Lock-Release phases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..data.loaders import PreparedDataset
from ..errors import ArkxValueError
from ..tasks import Task, get_kind

log = logging.getLogger("arkx.training")


#: The task family (``training.tasks``; Foundation X's branches) each task kind belongs to.
FAMILY_OF_KIND = {"multilabel": "classification", "multiclass": "classification", "detection": "localization",
                  "segmentation": "segmentation"}


def pretraining_tasks(datasets: dict[str, PreparedDataset], families: Sequence[str] = ("classification",),
                      per_dataset: dict[str, Sequence[str]] | None = None) -> dict[str, list[Task]]:
    """The tasks pretrained on each dataset, in the order its epochs run (classification, localization,
    segmentation: :meth:`arkx.data.records.Records.tasks` lists them so), named after the dataset's head.

    ``families``: ``training.tasks`` (Ark: classification only); ``per_dataset``: a dataset's own ``tasks``,
    a subset of them, each of which it must have. A dataset with nothing for ``families`` trains nothing
    (a warning; the same dataset list serves every Foundation X variant); no task at all is an error."""
    per_dataset = per_dataset or {}
    tasks = {}
    for name, ds in datasets.items():
        explicit = list(per_dataset.get(name) or [])
        outside = [f for f in explicit if f not in families]
        if outside:
            raise ArkxValueError(f"datasets: {name!r} asks for task families {outside} that training.tasks "
                                 f"({list(families)}) does not train")
        wanted = explicit or list(families)
        chosen = [task for task in ds.tasks() if FAMILY_OF_KIND.get(task.kind) in wanted]
        has = [f"{FAMILY_OF_KIND.get(t.kind, t.kind)} ({t.kind})" for t in ds.tasks()] or ["no labels"]
        lacking = [f for f in explicit if f not in {FAMILY_OF_KIND.get(t.kind) for t in chosen}]
        if lacking:
            raise ArkxValueError(f"datasets: {name!r} asks for {lacking} but has {', '.join(has)}")
        if not chosen:
            if wanted == ["classification"]:
                raise ArkxValueError(f"dataset {name!r} has no image-level classification labels to pretrain a head on")
            log.warning("dataset %r has nothing to train for task families %s (it has %s); it is left out of the "
                        "schedule", name, wanted, ", ".join(has))
        tasks[name] = chosen
    if not any(tasks.values()):
        raise ArkxValueError(f"no dataset has anything to train for task families {list(families)}")
    return tasks


def geometric(task: Task) -> bool:
    """Whether ``task``'s targets move with the image (masks, boxes): their batches go through the geometry."""
    return bool({"masks", "boxes"} & set(get_kind(task.kind).loader_targets))


@dataclass(frozen=True)
class Phase:
    """One part of a schedule step: ``lock`` (Foundation X: the ``frozen`` groups frozen, on a ``fraction`` of
    the data) or ``train`` / ``release`` (everything trains, all the data)."""

    name: str
    fraction: float = 1.0
    frozen: tuple[str, ...] = ()
    salt: int = 10  # the sampler seed's salt: a plain or release epoch keeps Ark's
