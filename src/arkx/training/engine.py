"""The pretraining engine: a plain loop over the schedule, in the torchvision-references style.

    for step in schedule:
        loss = engine.train_step(step)
        for callback in callbacks:          # EMA teacher, log, evaluate, checkpoint
            callback.on_step_end(engine, step, loss)

The engine owns the step: device placement, AMP, compile, channels_last, the views, gradient
clipping, learning rate and the optimizer. What a batch's loss is belongs to the
:class:`~arkx.training.objective.Objective` (task loss through the task's kind, consistency at named
feature sites); what happens between steps (EMA, evaluation, checkpoints, logging) to the
:mod:`~arkx.training.callbacks`. Each schedule step (one epoch of one (dataset, task) in cyclic mode,
one mixed epoch in concurrent mode) is a pure function of (weights, optimizer state, seed, step
index): that is what makes ``resume`` give the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import ArkConfig
from ..data.batch import Batch
from ..data.geometry import warp_batch
from ..data.loaders import PreparedDataset, make_loader, shuffle_of
from ..data.sharding import slice_bounds, slice_weight
from ..data.transforms import eval_view, sample_augment_params, student_view, to_unit
from ..errors import ArkxValueError
from ..evaluation.reports import MetricsLog, NullMetrics
from ..models.ark import ArkModel
from ..tasks import Task, get_kind
from . import schedule as sched
from .callbacks import Callback, default_callbacks
from .devices import autocast_for, resolve_device, to_device  # noqa: F401  (re-exported)
from .distributed import (
    SINGLE,
    Distributed,
    all_mean,
    all_sum,
    average_gradients,
    broadcast_buffers,
    check_in_sync,
    wrap_student,
)
from .nonfinite import NonFiniteGuard, NonFiniteLoss  # noqa: F401  (NonFiniteLoss re-exported)
from .objective import PROJECTION, Objective, Terms
from .optim import build_optimizer, set_learning_rate
from .plan import FAMILY_OF_KIND, Phase, geometric, pretraining_tasks  # noqa: F401  (re-exported)
from .state import load_checkpoint, restore_rng
from .task_evaluation import TaskEvaluation
from .teacher import make_teacher

log = logging.getLogger("arkx.training")


def derive_seed(seed: int, step: int, salt: int = 0) -> int:
    """A distinct 63-bit seed per (run seed, schedule step, purpose)."""
    return (seed * 0x9E3779B1 + (step + 1) * 0x85EBCA77 + salt * 0xC2B2AE3D) % (2**63 - 1)


@dataclass
class RunSummary:
    out: Path
    steps_done: int
    total_steps: int
    images_seen: int = 0
    train_seconds: float = 0.0
    skipped_images: dict[str, int] = field(default_factory=dict)
    skipped_steps: int = 0
    final: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> dataset -> test mean AUC
    # model -> dataset -> task kind -> test score (mean AUC, mAP40 or Dice) of every pretraining task
    final_tasks: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.steps_done >= self.total_steps


class Engine(NonFiniteGuard, TaskEvaluation):
    """Pretraining of ``student`` (and its EMA teacher) on ``datasets`` as ``cfg`` says, into the run folder ``out``."""

    def __init__(self, cfg: ArkConfig, datasets: dict[str, PreparedDataset], student: ArkModel, out: Path,
                 progress: bool = True, dist: Distributed = SINGLE):
        self.cfg = cfg
        self.datasets = datasets
        self.out = Path(out)
        self.dist = dist  # this process's place in a torchrun job (a job of one by default)
        self.progress = progress and dist.is_main
        self.device = dist.device(cfg.run.device) or resolve_device(cfg.run.device)
        t = cfg.training
        self.tasks = pretraining_tasks(datasets, t.tasks, {d.head_name: d.tasks for d in cfg.datasets if d.tasks})
        self._check_heads(student)
        self.student = student.to(self.device)
        if t.channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
        # DDP (a multi-process job): built before the teacher copies the student, so the teacher starts from
        # the weights DDP broadcast from rank 0
        self.ddp = wrap_student(self.student, self._student_part, self.device) if dist.enabled else None
        # a concurrent step sums several forward passes into one backward, which DDP (one forward per backward)
        # does not support: its gradients are averaged by one coalesced all-reduce after the backward instead
        self._average_by_hand = False
        self.teacher = make_teacher(self.student)
        self.optimizer = build_optimizer(self.student, t, fused=self.device.type == "cuda")
        self.autocast = autocast_for(t.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if t.amp == "fp16" and self.device.type == "cuda" else None
        # "off", "pending" (compiled module built, not run yet), "compiled" (its forward ran) or
        # "fallback" (it failed, training runs eagerly): tests and the run log can tell which path ran.
        self.compile_state = "off"
        self.compiled = None
        if t.compile:
            try:
                self.compiled = torch.compile(self.student)
                self.compile_state = "pending"
            except Exception as err:  # compile is an optimisation: fall back, say so
                self._compile_failed(err)
        self.schedule = sched.build_schedule(t.mode, self._schedule_entries(), t.rounds)
        self.objective = Objective.from_config(t.consistency, len(self.schedule))
        # one train loader per (dataset, targets): a dataset's classification epochs read labels only, its
        # localization epochs boxes, its segmentation epochs masks (built on first use, workers kept)
        self.train_loaders: dict[tuple[str, tuple[str, ...]], DataLoader] = {}
        self.eval_loaders: dict[tuple[str, str, tuple[str, ...]], DataLoader] = {}
        self.metrics: MetricsLog | None = None  # open while run() runs; the callbacks write to it
        self.images_seen = 0
        self.skipped_steps = 0

    def _schedule_entries(self) -> list[tuple[str, list[Task]]]:
        """(dataset, its tasks) in schedule order: ``training.order`` cycles in cyclic mode; a concurrent step
        sums the datasets in the order they were given (the order their batches are drawn and their losses add)."""
        names = self.cfg.dataset_order if self.cfg.training.mode == "cyclic" else list(self.datasets)
        return [(name, self.tasks[name]) for name in names if self.tasks[name]]

    def _check_heads(self, model: ArkModel) -> None:
        """Every scheduled task needs its head on the model (built before the teacher copies it)."""
        have = {(t.name, t.kind) for t in model.tasks()}
        missing = [f"{t.name} ({t.kind})" for tasks in self.tasks.values() for t in tasks if (t.name, t.kind) not in have]
        if missing:
            raise ArkxValueError(f"the model has no head for task(s) {missing}; build it with every pretraining task "
                                 "(arkx.training.engine.pretraining_tasks)")

    def train_loader(self, name: str, task: Task) -> DataLoader:
        """The train loader of dataset ``name`` carrying what ``task``'s kind needs."""
        targets = tuple(get_kind(task.kind).loader_targets)
        key = (name, targets)
        if key not in self.train_loaders:
            d, t = self.cfg.data, self.cfg.training
            self.train_loaders[key] = make_loader(self.datasets[name], "train", d.batch_size, d.workers, train=True,
                                                  max_batches=t.max_iters_per_epoch,
                                                  pin_memory=self.device.type == "cuda", targets=targets,
                                                  shard=self._shard)
        return self.train_loaders[key]

    @property
    def _shard(self) -> tuple[int, int] | None:
        return (self.dist.rank, self.dist.world_size) if self.dist.enabled else None

    # ------------------------------------------------------------------ resume
    def restore(self, checkpoint_dir: Path) -> int:
        state = load_checkpoint(checkpoint_dir)
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state)
        extra = state.get("extra", {})
        self.images_seen = int(extra.get("images_seen", 0))
        self.skipped_steps = int(extra.get("skipped_steps", 0))
        return int(state["step_done"])

    # ------------------------------------------------------------------ one iteration
    def _compile_failed(self, err: Exception) -> None:
        log.warning("torch.compile failed (%s: %s); training runs eagerly", type(err).__name__, err)
        self.compiled = None
        self.compile_state = "fallback"

    def _student_forward(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's forward, compiled when ``training.compile`` is on. ``torch.compile`` compiles
        lazily, so most failures surface at the first call: they, too, fall back to eager."""
        if self.compiled is None:
            return self.student(x, name)
        try:
            out = self.compiled(x, name)
        except Exception as err:
            self._compile_failed(err)
            return self.student(x, name)
        self.compile_state = "compiled"
        return out

    def _views(self, images: torch.Tensor, aug_gen: torch.Generator, params: dict[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's augmented view and the teacher's view (Ark+: the resized original image).
        ``params``: the augmentation already drawn (when masks and boxes must follow it), else drawn here."""
        size = self.cfg.data.image_size
        augment = self.cfg.augment
        unit = to_unit(images)  # converted once; both views read it
        if params is None:
            params = sample_augment_params(images.shape[0], augment, aug_gen)
        x_student = student_view(unit, size, params, augment.border)
        x_teacher = eval_view(unit, size)
        if self.cfg.training.channels_last:
            x_student = x_student.contiguous(memory_format=torch.channels_last)
            x_teacher = x_teacher.contiguous(memory_format=torch.channels_last)
        return x_student, x_teacher

    def _forward(self, task: Task, x_student: torch.Tensor, x_teacher: torch.Tensor, targets: Any = None
                 ) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The student's head output and its features at the objective's sites, and the teacher's (no gradient).

        Ark's path (a classification task, the projection the only site) is ``student(x, head)`` (compiled
        when ``training.compile``) and ``teacher.embed``; any other task or site reads the models' ``Features``
        (the head, given the loss ``targets``, e.g. for the detector's denoising queries, and the sites that
        apply to ``task`` read one pass)."""
        objective = self.objective
        if self.ddp is not None and not self._average_by_hand:
            output, student_sites = self.ddp(task, x_student, targets)
        else:
            output, student_sites = self._student_part(task, x_student, targets)
        teacher_sites = {}
        if student_sites:
            with torch.no_grad():
                if task.is_classification and objective.projection_only:
                    teacher_sites = {PROJECTION: self.teacher.embed(x_teacher)}
                else:
                    teacher_features = self.teacher.forward_features(x_teacher, pyramid=objective.needs_pyramid(task))
                    teacher_sites = objective.read_sites(self.teacher, teacher_features, task)
        return output, student_sites, teacher_sites

    def _student_part(self, task: Task, x_student: torch.Tensor, targets: Any = None
                      ) -> tuple[Any, dict[str, torch.Tensor]]:
        """The student's pass of one batch: the head's output and the features at the objective's sites (all
        that has a gradient: under DDP this is the wrapped module's forward)."""
        objective = self.objective
        if task.is_classification and objective.projection_only:
            z_student, output = self._student_forward(x_student, task.name)
            return output, ({PROJECTION: z_student} if objective.sites else {})
        features, output = self.student.run_task(x_student, task, targets=targets)
        return output, objective.read_sites(self.student, features, task)

    def _augment_params(self, n: int, aug_gen: torch.Generator, share: tuple[int, int, int] | None
                        ) -> dict[str, torch.Tensor] | None:
        """The augmentation of a batch of ``n`` images; in a multi-process job (``share``: the global batch's size
        and this rank's ``[start, stop)``) drawn for the whole global batch, this rank keeping its rows, so the
        images get the parameters one process would give them. ``None`` (one process): drawn by ``_views``."""
        if share is None:
            return None
        total, start, stop = share
        params = sample_augment_params(total, self.cfg.augment, aug_gen)
        return {key: value[start:stop] for key, value in params.items()}

    def _share(self, loader: DataLoader, position: int) -> tuple[int, int, int] | None:
        """``(global batch size, start, stop)`` of this rank's slice of global batch ``position`` (None: one process)."""
        if self.ddp is None:
            return None
        total = loader.batch_sampler.global_size(position)
        return (total, *slice_bounds(total, self.dist.world_size, self.dist.rank))

    def _batch_loss(self, name: str, batch: Batch, step: sched.Step, aug_gen: torch.Generator,
                    label_gen: torch.Generator, weights: dict[str, float], task: Task | None = None,
                    share: tuple[int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The objective's loss of one batch of dataset ``name`` for the step's ``task`` (default: the dataset's
        first pretraining task), on the device, and the batch's record rows.

        A task whose targets move with the image (masks, boxes) has them warped by the same augmentation
        parameters as the student's view (:func:`arkx.data.geometry.warp_batch`), on the device. ``share``
        (a multi-process job): see :meth:`_augment_params`; the loss is weighted by the slice's share of the
        global batch (:func:`arkx.data.sharding.slice_weight`)."""
        task = task or self.tasks[name][0]
        data = self.datasets[name]
        params = self._augment_params(batch.images.shape[0], aug_gen, share)
        if geometric(task):
            on_device = batch.to(self.device, non_blocking=True)
            if params is None:
                params = sample_augment_params(on_device.images.shape[0], self.cfg.augment, aug_gen)
            x_student, x_teacher = self._views(on_device.images, aug_gen, params)
            view = warp_batch(on_device, params, self.cfg.data.image_size)
            targets = self.objective.targets(task, view, data, label_gen)
        else:
            # the targets are made on the CPU copy (the policy's draws come from a CPU generator): no device sync
            targets = self.objective.targets(task, batch, data, label_gen)
            images = batch.images.to(self.device, non_blocking=True)
            targets = to_device(targets, self.device)
            x_student, x_teacher = self._views(images, aug_gen, params)
        with self.autocast():
            output, student_sites, teacher_sites = self._forward(task, x_student, x_teacher, targets)
            terms: Terms = self.objective.terms(task, output, targets, student_sites, teacher_sites)
        if share is not None:
            terms = self._weighted_for_job(task, terms, targets, share)
        return self.objective.combine(terms, weights), batch.rows

    def _weighted_for_job(self, task: Task, terms: Terms, targets: Any, share: tuple[int, int, int]) -> Terms:
        """Each term weighted by this rank's share of what it averages over in the global batch, so that DDP's
        mean of the ranks' gradients is the gradient of the global batch's loss: the images for the consistency
        terms, the kind's :meth:`~arkx.tasks.TaskKind.loss_count` (labelled entries, annotated structures) for
        the task term (summed over ranks: one small collective per iteration, no host sync)."""
        world = self.dist.world_size
        per_image = slice_weight(share[2] - share[1], share[0], world)
        count = get_kind(task.kind).loss_count(targets)
        if count is None:
            task_weight = per_image
        else:
            count = count.float().reshape(())
            task_weight = world * count.clamp(min=1) / all_sum(count, self.dist).clamp(min=1)
        return Terms(terms.task * task_weight, {name: term * per_image for name, term in terms.consistency.items()})

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        t = self.cfg.training
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self._average_by_hand:
                average_gradients(self.student, self.dist)
            if t.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.student.parameters(), t.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        loss.backward()
        if self._average_by_hand:
            average_gradients(self.student, self.dist)
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), t.grad_clip)
        self.optimizer.step()

    # ------------------------------------------------------------------ one schedule step
    def _iterations(self, loader: DataLoader) -> int:
        n = len(loader)
        cap = self.cfg.training.max_iters_per_epoch
        return min(n, cap) if cap else n

    def phases(self, step: sched.Step) -> list[Phase]:
        """The phases of ``step``: one plain epoch, or (Lock-Release, a cyclic step of a kind in
        ``training.lock_release.kinds``) a lock epoch on a seeded part of the data, then a release epoch."""
        lr_cfg = self.cfg.training.lock_release
        task = step.task
        if not lr_cfg.enabled or task is None or len(step.parts) != 1 or task.kind not in lr_cfg.kinds:
            return [Phase("train")]
        groups = self.student.parameter_groups()
        frozen = tuple(g for g in lr_cfg.freeze if g in groups)
        return [Phase("lock", lr_cfg.lock_fraction, frozen, salt=30), Phase("release")]

    def _seed_samplers(self, step: sched.Step, loaders: list[DataLoader], phase: Phase) -> int:
        """Seed each part's sampler for ``phase`` of ``step``; returns the phase's number of iterations."""
        for k, loader in enumerate(loaders):
            shuffle_of(loader).set_seed(derive_seed(self.cfg.run.seed, step.index, phase.salt + k), phase.fraction)
        return max(self._iterations(loader) for loader in loaders)

    @contextlib.contextmanager
    def _phase(self, phase: Phase):
        """Inside a lock phase the ``frozen`` groups do not train: no gradient (so the optimizer leaves them
        untouched, momentum and weight decay included) and their modules in eval mode (no BatchNorm statistics
        updates, no dropout); everything is trainable again afterwards, also after an error."""
        if not phase.frozen:
            yield
            return
        self.student.freeze(phase.frozen)
        modules = [getattr(self.student, g) for g in phase.frozen if isinstance(getattr(self.student, g, None), torch.nn.Module)]
        for module in modules:
            module.eval()
        try:
            yield
        finally:
            self.student.unfreeze(phase.frozen)
            for module in modules:
                module.train()

    def train_step(self, step: sched.Step,
                   on_iteration: Callable[[int, int, torch.Tensor, int], None] | None = None) -> float:
        """Train one schedule step (all its phases); returns the mean loss over its iterations."""
        t = self.cfg.training
        seed = derive_seed(self.cfg.run.seed, step.index)
        # dropout / drop-path inside the backbone: one stream per rank (rank 0's is a single process's)
        torch.manual_seed(seed if self.dist.rank == 0 else derive_seed(seed, self.dist.rank, 40))
        aug_gen = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, step.index, 1))
        label_gen = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, step.index, 2 + 1000 * self.dist.rank))
        loaders = [self.train_loader(name, task) for name, task in step.parts]
        self._average_by_hand = self.ddp is not None and len(step.parts) > 1
        phases = self.phases(step)
        lengths = [self._seed_samplers(step, loaders, phase) for phase in phases]
        if len(phases) > 1 and lengths[0] == 0:
            log.warning("step %d (%s): the lock phase's %.0f%% of the data is less than one batch; it is skipped",
                        step.index, step.dataset, 100 * phases[0].fraction)
        iterations = sum(lengths)  # the LR's clock runs over the whole step
        weights = self.objective.weights(step)
        self.student.train()
        total = torch.zeros((), device=self.device)
        counted, done = 0, 0
        window: list[tuple[torch.Tensor, list]] = []  # (loss on the device, batches) since the last read-back
        for phase, length in zip(phases, lengths):
            self._seed_samplers(step, loaders, phase)
            iterators = [iter(loader) for loader in loaders]
            restarts = [0] * len(loaders)
            positions = [0] * len(loaders)  # global batches drawn from each part's current pass
            with self._phase(phase):
                for _ in range(length):
                    it = done
                    done += 1
                    lr = sched.learning_rate(sched.progress_in_rounds(step, it, iterations), base=t.lr,
                                             rounds=t.rounds, warmup=t.warmup_rounds, schedule=t.lr_schedule,
                                             min_lr=t.min_lr, iteration=sched.iteration_rounds(step, iterations))
                    set_learning_rate(self.optimizer, lr)
                    loss = torch.zeros((), device=self.device)
                    batches = []
                    for k, (name, task) in enumerate(step.parts):
                        batch = self._next_batch(k, loaders, iterators, restarts, step, positions)
                        share = self._share(loaders[k], positions[k] - 1)
                        part, rows = self._batch_loss(name, batch, step, aug_gen, label_gen, weights, task, share)
                        loss = loss + part
                        batches.append((name, rows))
                        self.images_seen += share[0] if share else int(rows.shape[0])  # the job's images
                    if t.on_nonfinite_loss == "skip" and self._skip_if_nonfinite(loss, step, batches):
                        continue
                    self._optimizer_step(loss)
                    total += loss.detach()
                    counted += 1
                    window.append((loss.detach(), batches))
                    if len(window) >= t.log_every:
                        self._read_back(window, step)
                    if on_iteration is not None:
                        on_iteration(it + 1, iterations, total, counted)
        self._read_back(window, step)
        # the student's BatchNorm statistics follow each rank's slice: rank 0's go everywhere before the EMA
        broadcast_buffers(self.student, self.dist)
        return float(all_mean(total, self.dist).item() / max(counted, 1))

    def _next_batch(self, k: int, loaders: list[DataLoader], iterators: list[Any], restarts: list[int],
                    step: sched.Step, positions: list[int]) -> Batch:
        """Next batch of part ``k``; in concurrent mode a shorter dataset starts a fresh pass."""
        try:
            batch = next(iterators[k])
        except StopIteration:
            restarts[k] += 1
            shuffle_of(loaders[k]).set_seed(derive_seed(self.cfg.run.seed, step.index, 100 + 1000 * restarts[k]))
            iterators[k] = iter(loaders[k])
            positions[k] = 0
            batch = next(iterators[k])
        positions[k] += 1
        return batch

    # ------------------------------------------------------------------ the run
    def run(self, start_step: int = 0, stop_after_steps: int | None = None,
            checkpoint_extra: Callable[[], dict] | None = None,
            callbacks: Sequence[Callback] | None = None) -> RunSummary:
        """Train the schedule from ``start_step``, calling each callback after every step and at the end.

        ``callbacks`` default to :func:`arkx.training.callbacks.default_callbacks` (EMA, log, evaluate,
        checkpoint, in that order); ``checkpoint_extra``: a zero-argument callable whose dict is added to every
        checkpoint's ``extra`` (the caller's record of the run: data, config, time)."""
        callbacks = list(callbacks) if callbacks is not None else default_callbacks(checkpoint_extra)
        # one writer: rank 0 of a multi-process job logs (every rank evaluates: the scores are gathered)
        self.metrics = MetricsLog(self.out, start_step=start_step) if self.dist.is_main else NullMetrics()
        summary = RunSummary(out=self.out, steps_done=start_step, total_steps=len(self.schedule),
                             skipped_images={n: len(d.skipped) for n, d in self.datasets.items()})
        remaining = self.schedule[start_step:]
        if stop_after_steps is not None:
            remaining = remaining[:stop_after_steps]
        started = time.perf_counter()
        try:
            with _progress(self.progress, len(self.schedule), start_step) as bar:
                for step in remaining:
                    label = f"round {step.round + 1}/{self.cfg.training.rounds} · {step.dataset}"
                    bar.describe(label)
                    loss = self.train_step(step)
                    check_in_sync({"student": self.student, "teacher": self.teacher}, self.dist, f"step {step.index}")
                    for callback in callbacks:
                        callback.on_step_end(self, step, loss)
                    summary.steps_done = step.index + 1
                    bar.advance(1, description=f"{label} · loss {loss:.4f}")
            summary.train_seconds = time.perf_counter() - started
            summary.images_seen = self.images_seen
            summary.skipped_steps = self.skipped_steps
            for callback in callbacks:
                callback.on_run_end(self, summary)
        finally:
            self.metrics.close()
        return summary


def _progress(enabled: bool, total_steps: int, completed: int) -> Any:
    """The run's progress (arkx.progress: a bar on a terminal, a log line every ~10% of steps otherwise)."""
    from ..progress import Progress

    return Progress(total_steps, "pretraining", enabled=enabled, completed=completed, unit="steps", logger=log)
