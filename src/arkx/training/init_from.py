"""Incremental pretraining (Ark+, ``model.init_from``): the weights of an earlier run that start a new one.

:func:`_initial_weights` loads the old run's student and teacher (or one export for both) and checks,
before any work, that they fit the new run: a head kept by name must predict the same labels in the same
order (:func:`_check_heads_fit`), and the backbone and projector must have the old keys and shapes
(:func:`_check_trunk_fits`, built on the meta device). :func:`_apply_initial_weights` then loads them
into the engine's student and teacher at step 0 of the new run; new heads keep their seeded
initialisation. :func:`heads_for` names one head per dataset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import ArkConfig, ConfigError
from ..data.records import Records
from ..models.ark import ArkModel, build_model
from ..tasks import Task
from ..models.files import load_model
from .engine import Engine
from .state import LAST

log = logging.getLogger("arkx")


def heads_for(datasets) -> list[Task]:
    """One head per dataset (``{name: Records}`` or ``{name: PreparedDataset}``), named after it."""
    return [Task(name, ds.task.kind, ds.task.label_names) for name, ds in datasets.items() if ds.task is not None]


def _initial_weights(cfg: ArkConfig, records: dict[str, Records]) -> dict[str, ArkModel]:
    """``{"student": model, "teacher": model}`` of ``model.init_from``, checked to fit the new run.

    A run folder (finished or in progress) or its ``checkpoints/last.pt`` gives its student and its teacher,
    so the new run continues both where the old one left them (as cyclic training would have with one more
    dataset); a single ``.safetensors`` export (e.g. the released teacher) starts both from that file."""
    source = Path(cfg.model.init_from)
    if not source.exists():
        raise ConfigError(f"invalid config: model.init_from: {source} not found")
    if source.is_dir() and not any((source / f).is_file() for f in ("teacher.safetensors", f"checkpoints/{LAST}")):
        raise ConfigError(f"invalid config: model.init_from: {source} is not an arkx run folder "
                          f"(no teacher.safetensors, no checkpoints/{LAST})")
    if source.is_dir() or source.suffix == ".pt":
        models = {which: load_model(source, which) for which in ("student", "teacher")}
    else:
        model = load_model(source)
        models = {"student": model, "teacher": model}
    new_heads = heads_for(records)
    for which, model in models.items():
        _check_heads_fit(model, new_heads, source)
        _check_trunk_fits(model, cfg, source)
    return models


def _check_heads_fit(old: ArkModel, new_heads: list[Task], source: Path) -> None:
    """A head kept from the old run must predict the same labels in the same order (its weights are per label)."""
    for spec in new_heads:
        was = old.head_specs.get(spec.name)
        if was is None:
            continue
        if was.kind != spec.kind or tuple(was.label_names) != tuple(spec.label_names):
            raise ConfigError(f"model.init_from: head {spec.name!r} of {source} predicts {was.kind} "
                              f"{list(was.label_names)}, but the dataset now has {spec.kind} "
                              f"{list(spec.label_names)}; give the dataset another name (datasets[].name) "
                              "to train a new head")


def _trunk(state: dict) -> dict:
    """The backbone and projector entries of a state dict (everything but the heads)."""
    return {k: v for k, v in state.items() if not k.startswith("heads.")}


def _check_trunk_fits(old: ArkModel, cfg: ArkConfig, source: Path) -> None:
    """The new run's backbone and projector (built on the meta device: no memory) must have the old keys and shapes."""
    from ..models.backbones import format_key_mismatch

    model_cfg = cfg.model.model_copy(update={"checkpoint": None})
    try:
        with torch.device("meta"):
            own = _trunk(build_model(model_cfg, []).state_dict())
    except Exception:  # noqa: BLE001 - a backbone that cannot be built on meta is built for real
        own = _trunk(build_model(model_cfg, []).state_dict())
    state = _trunk(old.state_dict())
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ConfigError("model.init_from: " + format_key_mismatch(str(source), missing, unexpected, mismatched,
                                                                     own, state))


@torch.no_grad()
def _apply_initial_weights(engine: Engine, start_from: dict[str, ArkModel], source: Path) -> None:
    """Load the old run's backbone, projector and same-named heads into the student and the teacher.

    A new head keeps the student's seeded initialisation and the teacher gets an exact copy of it (as
    the teacher of a new run starts as a copy of the student); from then on the EMA moves it."""
    new_names = [n for n in engine.student.heads if n not in start_from["student"].heads]
    for which, target in (("student", engine.student), ("teacher", engine.teacher)):
        old = start_from[which]
        state = _trunk(old.state_dict())
        state.update({f"heads.{n}.{k}": v for n in target.heads if n in old.heads
                      for k, v in old.heads[n].state_dict().items()})
        # the student's new heads keep their seeded initialisation; the teacher's become copies of them
        state.update({f"heads.{n}.{k}": v.clone() for n in new_names
                      for k, v in engine.student.heads[n].state_dict().items()})
        target.load_state_dict(state, strict=True)
    dropped = [n for n in start_from["student"].heads if n not in engine.student.heads]
    log.info("initialised from %s: heads %s loaded, new heads %s%s", source,
             [n for n in engine.student.heads if n not in new_names] or "none", new_names or "none",
             f", heads not configured any more (left out): {dropped}" if dropped else "")
