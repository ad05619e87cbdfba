"""What the engine does with a NaN/Inf loss: stop naming the batch's images, or skip the iteration
(``training.on_nonfinite_loss``), the same decision on every rank of a multi-process job."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import ArkxRuntimeError
from . import schedule as sched
from .distributed import all_mean

log = logging.getLogger("arkx.training")


class NonFiniteLoss(ArkxRuntimeError):
    """The loss became NaN/Inf; the message names the dataset, step and image ids of the batch."""


class NonFiniteGuard:
    """The engine's checks of its losses (a mixin of :class:`~arkx.training.engine.Engine`: it reads
    ``datasets``, ``dist`` and ``skipped_steps``)."""

    def _nonfinite_message(self, value: float, step: sched.Step, batches: list[tuple[str, torch.Tensor]]) -> str:
        ids = []
        for name, rows in batches:
            frame = self.datasets[name].records.images
            ids += [f"{name}:{frame['image_id'].iloc[int(r)]}" for r in rows[:8]]
        return (f"non-finite loss ({value}) at step {step.index} (round {step.round}, "
                f"dataset {step.dataset}); batch images: {', '.join(ids)}")

    def _skip_if_nonfinite(self, loss: torch.Tensor, step: sched.Step, batches: list[tuple[str, torch.Tensor]]) -> bool:
        """``on_nonfinite_loss=skip``: True (and a warning) when this iteration's loss is not finite.

        Whether to step must be known before the optimizer step, so this mode reads the loss back
        to the host at every iteration (one sync per iteration); ``stop`` mode does not, see
        :meth:`_read_back`.
        """
        loss = all_mean(loss, self.dist)  # every rank skips, or none does
        if torch.isfinite(loss).item():
            return False
        log.warning("%s; step skipped", self._nonfinite_message(loss.item(), step, batches))
        self.skipped_steps += 1
        return True

    def _read_back(self, window: list[tuple[torch.Tensor, list]], step: sched.Step) -> None:
        """Bring the losses of the iterations since the last read-back to the host, in one transfer.

        Losses stay on the device between read-backs (every ``training.log_every`` iterations and at
        the end of the step), so the GPU is never stalled per iteration. A non-finite loss raises
        :class:`NonFiniteLoss` naming the first bad iteration's batch: ``window`` keeps each
        iteration's image rows for that. The weights in memory may already be damaged then; the
        checkpoint on disk (written after the previous step) is not.
        """
        if not window:
            return
        # a multi-process job: the mean over ranks, so every rank sees the same values and stops together
        values = all_mean(torch.stack([loss for loss, _ in window]).float(), self.dist).tolist()
        for value, (_, batches) in zip(values, window):
            if not math.isfinite(value):
                raise NonFiniteLoss(self._nonfinite_message(value, step, batches) + ". The last checkpoint is "
                                    "intact; lower the learning rate or set training.on_nonfinite_loss=skip.")
        log.debug("step %d (%s): mean loss %.5f over the last %d iterations", step.index, step.dataset,
                  sum(values) / len(values), len(values))
        window.clear()
