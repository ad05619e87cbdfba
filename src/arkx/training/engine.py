"""The pretraining engine: a plain loop over the schedule, in the torchvision-references style.

One place owns the step: device placement, AMP, compile, channels_last, gradient clipping,
learning rate, the optimizer's parameter groups, the teacher's EMA at dataset-epoch boundaries,
evaluation and checkpoints. Each schedule step (one dataset epoch in cyclic mode, one mixed epoch
in concurrent mode) is a pure function of (weights, optimizer state, seed, step index): that is
what makes ``resume`` give the same weights as an uninterrupted run.
"""

from __future__ import annotations

from ..errors import ArkxRuntimeError

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.loaders import PreparedDataset, make_loader
from ..data.transforms import apply_uncertain_policy, eval_view, sample_augment_params, student_view
from ..evaluation.metrics import task_auc
from ..evaluation.predict import predict_head
from ..evaluation.reports import MetricsLog
from . import schedule as sched
from .losses import combine, consistency_loss, task_loss
from .optim import build_optimizer, set_learning_rate
from .state import load_checkpoint, restore_rng, save_checkpoint
from .teacher import ema_update, make_teacher

log = logging.getLogger("arkx.training")


class NonFiniteLoss(ArkxRuntimeError):
    """The loss became NaN/Inf; the message names the dataset, step and image ids of the batch."""


def derive_seed(seed: int, step: int, salt: int = 0) -> int:
    """A distinct 63-bit seed per (run seed, schedule step, purpose)."""
    return (seed * 0x9E3779B1 + (step + 1) * 0x85EBCA77 + salt * 0xC2B2AE3D) % (2**63 - 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def autocast_for(amp: str, device: torch.device):
    """A zero-argument context factory for the configured mixed precision."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


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

    @property
    def finished(self) -> bool:
        return self.steps_done >= self.total_steps


class Engine:
    def __init__(self, cfg, datasets: dict[str, PreparedDataset], student, out: Path, progress: bool = True):
        self.cfg = cfg
        self.datasets = datasets
        self.out = Path(out)
        self.progress = progress
        self.device = resolve_device(cfg.run.device)
        t = cfg.training
        self.student = student.to(self.device)
        if t.channels_last:
            self.student = self.student.to(memory_format=torch.channels_last)
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
        self.schedule = sched.build_schedule(t.mode, cfg.dataset_order, t.rounds)
        pin = self.device.type == "cuda"
        d = cfg.data
        self.train_loaders = {
            name: make_loader(ds, "train", d.batch_size, d.workers, train=True,
                              max_batches=t.max_iters_per_epoch, pin_memory=pin)
            for name, ds in datasets.items()
        }
        self.eval_loaders: dict[tuple[str, str], object] = {}
        self.images_seen = 0
        self.skipped_steps = 0

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

    def _student_forward(self, x: torch.Tensor, name: str):
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

    def _batch_loss(self, name: str, batch, step: sched.Step, aug_gen, label_gen, weight: float):
        ds = self.datasets[name]
        images, targets, rows = batch
        # the policy runs on the CPU copy (its draws come from a CPU generator anyway): no device sync
        targets = apply_uncertain_policy(targets, ds.uncertain, label_gen, ds.lsr_ones_range, ds.lsr_zeros_range)
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        size = self.cfg.data.image_size
        augment = self.cfg.augment
        x_student = student_view(images, size, sample_augment_params(images.shape[0], augment, aug_gen), augment.border)
        x_teacher = eval_view(images, size)  # Ark+: the teacher sees the resized original image
        if self.cfg.training.channels_last:
            x_student = x_student.contiguous(memory_format=torch.channels_last)
            x_teacher = x_teacher.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            z_student, logits = self._student_forward(x_student, name)
            with torch.no_grad():
                z_teacher = self.teacher.embed(x_teacher)
            task = task_loss(ds.task.kind, logits, targets)
            cons = consistency_loss(z_student, z_teacher)
        return combine(task, cons, weight), rows

    def _nonfinite_message(self, value: float, step: sched.Step, batches: list) -> str:
        ids = []
        for name, rows in batches:
            frame = self.datasets[name].records.images
            ids += [f"{name}:{frame['image_id'].iloc[int(r)]}" for r in rows[:8]]
        return (f"non-finite loss ({value}) at step {step.index} (round {step.round}, "
                f"dataset {step.dataset}); batch images: {', '.join(ids)}")

    def _skip_if_nonfinite(self, loss: torch.Tensor, step: sched.Step, batches: list) -> bool:
        """``on_nonfinite_loss=skip``: True (and a warning) when this iteration's loss is not finite.

        Whether to step must be known before the optimizer step, so this mode reads the loss back
        to the host at every iteration (one sync per iteration); ``stop`` mode does not, see
        :meth:`_read_back`.
        """
        if torch.isfinite(loss).item():
            return False
        log.warning("%s; step skipped", self._nonfinite_message(loss.item(), step, batches))
        self.skipped_steps += 1
        return True

    def _read_back(self, window: list, step: sched.Step) -> None:
        """Bring the losses of the iterations since the last read-back to the host, in one transfer.

        Losses stay on the device between read-backs (every ``training.log_every`` iterations and at
        the end of the step), so the GPU is never stalled per iteration. A non-finite loss raises
        :class:`NonFiniteLoss` naming the first bad iteration's batch: ``window`` keeps each
        iteration's image rows for that. The weights in memory may already be damaged then; the
        checkpoint on disk (written after the previous step) is not.
        """
        if not window:
            return
        values = torch.stack([loss for loss, _ in window]).float().tolist()
        for value, (_, batches) in zip(values, window):
            if not math.isfinite(value):
                raise NonFiniteLoss(self._nonfinite_message(value, step, batches) + ". The last checkpoint is "
                                    "intact; lower the learning rate or set training.on_nonfinite_loss=skip.")
        log.debug("step %d (%s): mean loss %.5f over the last %d iterations", step.index, step.dataset,
                  sum(values) / len(values), len(values))
        window.clear()

    def _optimizer_step(self, loss: torch.Tensor) -> None:
        t = self.cfg.training
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if t.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.student.parameters(), t.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        loss.backward()
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), t.grad_clip)
        self.optimizer.step()

    # ------------------------------------------------------------------ one schedule step
    def _iterations(self, name: str) -> int:
        n = len(self.train_loaders[name])
        cap = self.cfg.training.max_iters_per_epoch
        return min(n, cap) if cap else n

    def train_step(self, step: sched.Step, on_iteration=None) -> float:
        """Train one schedule step; returns the mean loss over its iterations."""
        t = self.cfg.training
        seed = derive_seed(self.cfg.run.seed, step.index)
        torch.manual_seed(seed)  # dropout / drop-path inside the backbone
        aug_gen = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, step.index, 1))
        label_gen = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, step.index, 2))
        names = list(self.datasets) if step.dataset == sched.CONCURRENT else [step.dataset]
        for k, name in enumerate(names):
            self.train_loaders[name].sampler.set_seed(derive_seed(self.cfg.run.seed, step.index, 10 + k))
        iterations = max(self._iterations(n) for n in names)
        iterators = {n: iter(self.train_loaders[n]) for n in names}
        restarts = {n: 0 for n in names}
        weight = sched.consistency_weight(sched.step_fraction(step, len(self.schedule)),
                                          weight=t.consistency.weight, ramp=t.consistency.ramp)
        self.student.train()
        total = torch.zeros((), device=self.device)
        counted = 0
        window: list = []  # (loss on the device, batches) of the iterations since the last read-back
        for it in range(iterations):
            lr = sched.learning_rate(sched.progress_in_rounds(step, it, iterations), base=t.lr, rounds=t.rounds,
                                     warmup=t.warmup_rounds, schedule=t.lr_schedule, min_lr=t.min_lr,
                                     iteration=sched.iteration_rounds(step, iterations))
            set_learning_rate(self.optimizer, lr)
            loss = torch.zeros((), device=self.device)
            batches = []
            for name in names:
                batch = self._next_batch(name, iterators, restarts, step)
                part, rows = self._batch_loss(name, batch, step, aug_gen, label_gen, weight)
                loss = loss + part
                batches.append((name, rows))
                self.images_seen += int(rows.shape[0])
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
        return float(total.item() / max(counted, 1))

    def _next_batch(self, name: str, iterators: dict, restarts: dict, step: sched.Step):
        """Next batch of ``name``; in concurrent mode a shorter dataset starts a fresh pass."""
        try:
            return next(iterators[name])
        except StopIteration:
            restarts[name] += 1
            loader = self.train_loaders[name]
            loader.sampler.set_seed(derive_seed(self.cfg.run.seed, step.index, 100 + 1000 * restarts[name]))
            iterators[name] = iter(loader)
            return next(iterators[name])

    def ema_after(self, step: sched.Step) -> float:
        e = self.cfg.training.ema
        m = sched.ema_momentum(sched.step_fraction(step, len(self.schedule)), start=e.momentum_start,
                               end=e.momentum_end, schedule=e.schedule)
        ema_update(self.teacher, self.student, m)
        return m

    # ------------------------------------------------------------------ evaluation
    def _eval_loader(self, name: str, split: str):
        key = (name, split)
        if key not in self.eval_loaders:
            d = self.cfg.data
            self.eval_loaders[key] = make_loader(self.datasets[name], split, d.eval_batch_size, d.workers,
                                                 train=False, pin_memory=self.device.type == "cuda")
        return self.eval_loaders[key]

    def evaluate(self, split: str, models: list[str]) -> dict[str, dict[str, object]]:
        """``{model: {dataset: AucResult}}`` on one split of every dataset."""
        results: dict[str, dict[str, object]] = {}
        for model_name in models:
            model = self.student if model_name == "student" else self.teacher
            results[model_name] = {}
            for name, ds in self.datasets.items():
                if len(ds.indices(split)) == 0:
                    continue
                scores, targets, _ = predict_head(model, self._eval_loader(name, split), name, ds.task.kind,
                                                  self.device, self.cfg.data.image_size, self.autocast,
                                                  self.cfg.training.channels_last)
                results[model_name][name] = task_auc(ds.task.kind, scores, targets, ds.task.label_names)
        return results

    def _should_evaluate(self, step: sched.Step) -> bool:
        every = self.cfg.eval.every
        return every == "dataset_epoch" or (every == "round" and step.position == step.per_round - 1)

    # ------------------------------------------------------------------ the run
    def run(self, start_step: int = 0, stop_after_steps: int | None = None, checkpoint_extra=None) -> RunSummary:
        """Train the schedule from ``start_step``. ``checkpoint_extra``: a zero-argument callable whose dict is
        added to every checkpoint's ``extra`` (the caller's record of the run: data, config, time)."""
        cfg = self.cfg
        ckpt_dir = self.out / "checkpoints"
        metrics = MetricsLog(self.out, start_step=start_step)
        summary = RunSummary(out=self.out, steps_done=start_step, total_steps=len(self.schedule),
                             skipped_images={n: len(d.skipped) for n, d in self.datasets.items()})
        remaining = self.schedule[start_step:]
        if stop_after_steps is not None:
            remaining = remaining[:stop_after_steps]
        started = time.perf_counter()
        try:
            with _progress(self.progress, len(self.schedule), start_step) as bar:
                for step in remaining:
                    label = f"round {step.round + 1}/{cfg.training.rounds} · {step.dataset}"
                    bar.describe(label)
                    loss = self.train_step(step)
                    momentum = self.ema_after(step)
                    metrics.add_scalar(f"loss/{step.dataset}", loss, step.index)
                    metrics.add_scalar("ema_momentum", momentum, step.index)
                    if self._should_evaluate(step):
                        for split in cfg.eval.splits:
                            self._log_eval(metrics, step, split)
                    save_checkpoint(ckpt_dir, step_done=step.index + 1, student=self.student, teacher=self.teacher,
                                    optimizer=self.optimizer, keep_history=cfg.checkpoint.keep_history,
                                    extra=dict(images_seen=self.images_seen, skipped_steps=self.skipped_steps,
                                               heads=self.student.head_config(),
                                               **(checkpoint_extra() if checkpoint_extra else {})))
                    summary.steps_done = step.index + 1
                    bar.advance(1, description=f"{label} · loss {loss:.4f}")
            summary.train_seconds = time.perf_counter() - started
            summary.images_seen = self.images_seen
            summary.skipped_steps = self.skipped_steps
            if summary.finished and cfg.eval.test_at_end:
                final_step = sched.Step(len(self.schedule), cfg.training.rounds, "final", 0, 1)
                results = self._log_eval(metrics, final_step, "test")
                summary.final = {m: {d: r.mean for d, r in per.items()} for m, per in results.items()}
        finally:
            metrics.close()
        return summary

    def _log_eval(self, metrics: MetricsLog, step: sched.Step, split: str):
        results = self.evaluate(split, list(self.cfg.eval.models))
        for model_name, per_dataset in results.items():
            for name, result in per_dataset.items():
                metrics.add_auc(step=step.index, round_=step.round, trained=step.dataset, model=model_name,
                                dataset=name, split=split, result=result)
        return results


def _progress(enabled: bool, total_steps: int, completed: int):
    """The run's progress (arkx.progress: a bar on a terminal, a log line every ~10% of steps otherwise)."""
    from ..progress import Progress

    return Progress(total_steps, "pretraining", enabled=enabled, completed=completed, unit="steps", logger=log)
