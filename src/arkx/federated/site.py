"""One site of a federation: an ordinary arkx pretraining run, trained a slice at a time.

A site's run is the arkx run its config describes, with ``rounds × local_rounds`` cyclic rounds: federated
round ``r`` trains schedule steps ``[(r-1)·E·k, r·E·k)`` (``E`` local rounds of ``k`` steps each) through the
existing :class:`~arkx.training.engine.Engine` and its callbacks (the EMA teacher, evaluation, checkpoints),
so the learning rate, EMA momentum and consistency ramp follow the whole federation as one run. Before each
slice the master model's shared groups (and the heads shared with other sites) are loaded into the student;
the teacher, the site's own heads and the optimizer state stay the site's, on disk in its run folder
(``checkpoints/last.pt``, and ``federated/round_<r>.pt`` at the end of each slice, so a round the server asks
for again, after it resumed from an earlier checkpoint, starts from the state before that round).

FedProx adds ``mu/2·||w - w_master||²`` to the local loss without touching the engine: a gradient hook on
each parameter the master sent adds that term's gradient ``mu·(w - w_master)`` in every backward pass
(multiplied by the loss scale under fp16 GradScaler, whose gradients are scaled).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from ..config import ArkConfig
from ..errors import ArkxRuntimeError
from ..training.callbacks import Checkpoint
from ..training.schedule import Step
from .weights import SHARED_GROUPS, head_group, load_selected, selected_state

log = logging.getLogger("arkx.federated")

SNAPSHOTS = "federated"
STATE_FILE = "federated.json"
KEEP_SNAPSHOTS = 2


def add_proximal_term(engine, anchor: dict[str, torch.Tensor], mu: float) -> list:
    """Gradient hooks on the student's parameters named in ``anchor``: each backward adds ``mu·(w - anchor)``,
    the gradient of FedProx's ``mu/2·||w - anchor||²``. Returns the hook handles (``.remove()`` them)."""
    handles = []
    if mu <= 0:
        return handles
    for name, param in engine.student.named_parameters():
        if name not in anchor or not param.requires_grad:
            continue
        target = anchor[name].to(device=param.device, dtype=param.dtype)

        def hook(grad, param=param, target=target):
            scale = engine.scaler.get_scale() if engine.scaler is not None else 1.0
            return grad + (mu * scale) * (param.detach() - target)

        handles.append(param.register_hook(hook))
    return handles


class Site:
    """The state of one site across federated rounds. ``cfg`` is the site's arkx config as
    :func:`arkx.federated.config.site_config` makes it (rounds = federation rounds × local rounds)."""

    def __init__(self, name: str, cfg: ArkConfig, local_rounds: int, progress: bool = False):
        from ..api import _read_records
        from ..data.loaders import prepare_dataset
        from ..models.ark import build_model
        from ..training.engine import Engine
        from ..training.init_from import heads_for
        from ..training.preflight import _check_before_work, _check_trainable, _make_folder

        self.name = name
        self.cfg = cfg
        self.local_rounds = local_rounds
        self.out = Path(cfg.run.out)
        _check_before_work(cfg)
        records = _read_records(cfg)
        _make_folder(self.out, "run.out")
        (self.out / "config.yaml").write_text(cfg.to_yaml())
        cache_root = cfg.data.cache_dir or self.out / "cache"
        _make_folder(cache_root, "data.cache_dir")
        datasets = {d.head_name: prepare_dataset(d, cfg.data, cache_root, cfg.run.seed, progress=progress,
                                                 records=records[d.head_name]) for d in cfg.datasets}
        _check_trainable(datasets)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(cfg.run.seed)
        student = build_model(cfg.model, heads_for(datasets))
        self.engine = Engine(cfg, datasets, student, self.out, progress=progress)
        self.steps_per_round = len(self.engine.schedule) // cfg.training.rounds
        self.heads = {name: ds.task for name, ds in datasets.items()}
        #: training images per head (the FedAvg weights): usable train rows of each dataset
        self.train_images = {name: len(ds.indices("train")) for name, ds in datasets.items()}
        self.step_done = 0
        self.rounds_trained = 0
        last = self.out / "checkpoints" / "last.pt"
        if last.exists():
            self.step_done = self.engine.restore(self.out / "checkpoints")
            self.rounds_trained = self._read_state().get("round", 0)
            log.info("site %s: resumed its run at step %d (round %d)", name, self.step_done, self.rounds_trained)
        if not self._snapshot(0).exists():
            self._save(self._snapshot(0), 0)
        self._state_valid = True

    # ------------------------------------------------------------------ what the server asks about
    @property
    def examples(self) -> int:
        return sum(self.train_images.values())

    def head_info(self) -> list[dict]:
        """Each head: name, kind, labels and training images (the server finds heads shared by several sites)."""
        return [dict(name=n, kind=t.kind, labels=list(t.label_names), n=self.train_images[n])
                for n, t in self.heads.items()]

    def groups_to_send(self, shared_heads: list[str]) -> list[str]:
        return list(SHARED_GROUPS) + [head_group(h) for h in shared_heads if h in self.heads]

    def group_weight(self, group: str) -> int:
        """FedAvg's weight of this site for ``group``: all its training images for the backbone and projector,
        the images of that dataset for a head."""
        if group.startswith("heads/"):
            return self.train_images[group.split("/", 1)[1]]
        return self.examples

    # ------------------------------------------------------------------ one federated round
    def train_round(self, rnd: int, master: dict[str, torch.Tensor], shared_heads: list[str],
                    mu: float = 0.0) -> dict[str, torch.Tensor]:
        """Train federated round ``rnd`` (1-based) from ``master``; returns the update to send."""
        span = self.local_rounds * self.steps_per_round
        start = (rnd - 1) * span
        if start >= len(self.engine.schedule):
            raise ArkxRuntimeError(f"site {self.name}: round {rnd} is past the end of its schedule "
                                   f"({len(self.engine.schedule)} steps)")
        self._state_for(start)
        anchor = self._load_master(master)
        handles = add_proximal_term(self.engine, anchor, mu)
        self._state_valid = False  # until the slice finishes, memory and disk may be mid-round
        try:
            self.engine.run(start_step=start, stop_after_steps=span)
        finally:
            for handle in handles:
                handle.remove()
        self.step_done = start + span
        self.rounds_trained = rnd
        self._state_valid = True
        self._keep_snapshot(rnd)
        self._write_state(dict(round=rnd, step_done=self.step_done, phase="trained"))
        return selected_state(self.engine.student, self.groups_to_send(shared_heads))

    def receive_master(self, rnd: int, master: dict[str, torch.Tensor]) -> dict:
        """The aggregated master after round ``rnd``: loaded into the student (the teacher and local heads stay)
        and written to the site's checkpoint; returns the validation (and, after the last round, test) mean
        AUC of the student (master trunk with this site's heads) and of the teacher per dataset."""
        if not self._state_valid:
            self._state_for(self.step_done)
        self._load_master(master)
        if self.step_done > 0:
            step = Step(self.step_done - 1, (self.step_done - 1) // self.steps_per_round, "federated", 0, 1)
            Checkpoint().on_step_end(self.engine, step, 0.0)
        self._write_state(dict(round=rnd, step_done=self.step_done, phase="synced"))
        splits = ["val"] + (["test"] if self.step_done >= len(self.engine.schedule) else [])
        scores = {split: {model: {name: float(r.mean) for name, r in per.items()}
                          for model, per in self.engine.evaluate(split, ["student", "teacher"]).items()}
                  for split in splits}
        if self.step_done >= len(self.engine.schedule):
            self._export()
        return scores

    # ------------------------------------------------------------------ state on disk
    def _load_master(self, master: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Load the master's entries this site's model has (shared groups, and heads it holds)."""
        student = self.engine.student
        own = student.state_dict()
        mine = {k: v for k, v in master.items() if k in own}
        load_selected(student, mine)
        return mine

    def _state_for(self, start: int) -> None:
        """Make the engine's state the one to train from step ``start``: the state in memory if it is current
        (or behind: a site that missed rounds jumps ahead with its own teacher and heads), else the latest
        saved state at or before ``start``."""
        if self._state_valid and self.step_done <= start:
            if self.step_done < start:
                log.warning("site %s: missed rounds (its state is at step %d, the round starts at %d); it "
                            "continues from its own teacher and heads", self.name, self.step_done, start)
            return
        candidates = [p for p in self._snapshots() if self._round_of(p) * self.local_rounds
                      * self.steps_per_round <= start]
        if not candidates:
            raise ArkxRuntimeError(f"site {self.name}: no saved state at or before step {start} in "
                                   f"{self.out / SNAPSHOTS}; start the site again with a new run folder")
        path = max(candidates, key=self._round_of)
        self.step_done = self.engine.restore(path)
        self._state_valid = True
        log.info("site %s: restored %s (step %d) to train from step %d", self.name, path.name, self.step_done, start)

    def _snapshot(self, rnd: int) -> Path:
        return self.out / SNAPSHOTS / f"round_{rnd:05d}.pt"

    def _snapshots(self) -> list[Path]:
        return sorted((self.out / SNAPSHOTS).glob("round_*.pt"))

    @staticmethod
    def _round_of(path: Path) -> int:
        return int(path.stem.split("_")[1])

    def _save(self, path: Path, step_done: int) -> None:
        from ..training.state import save_checkpoint

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = save_checkpoint(path.parent / ".tmp", step_done=step_done, student=self.engine.student,
                              teacher=self.engine.teacher, optimizer=self.engine.optimizer,
                              extra=dict(heads=self.engine.student.head_config()))
        os.replace(tmp, path)

    def _keep_snapshot(self, rnd: int) -> None:
        """Copy the checkpoint at the end of round ``rnd`` (atomically), keeping the last few rounds."""
        last = self.out / "checkpoints" / "last.pt"
        target = self._snapshot(rnd)
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(last, tmp)
        os.replace(tmp, target)
        for old in self._snapshots()[:-KEEP_SNAPSHOTS]:
            old.unlink(missing_ok=True)

    def _read_state(self) -> dict:
        path = self.out / STATE_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write_state(self, state: dict) -> None:
        path = self.out / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(state, site=self.name)))
        os.replace(tmp, path)

    def _export(self) -> None:
        from ..models.files import export_model

        export_model(self.engine.teacher, self.cfg, self.out / "teacher.safetensors")
        export_model(self.engine.student, self.cfg, self.out / "student.safetensors")
