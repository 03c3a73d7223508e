"""One SGD step of a detector: forward and MultiBox loss over a step's micro-batches,
backward, gradient clipping, the update and the learning-rate schedule.

The trainer (:mod:`dsod.engine.trainer`) and the benchmark (``benchmarks/models.py``)
both take their steps through :func:`train_step`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from dsod.data.loader import TrainingBatch
from dsod.engine import distributed as dist
from dsod.engine.learning import SignalSums, signal_sums
from dsod.engine.optim import average_gradients
from dsod.engine.train_state import TrainingState
from dsod.runtime.network import Network

__all__ = ["StepResult", "train_step"]


@dataclass
class StepResult:
    """The step's losses, averaged over its micro-batches and processes (NaN for a step
    whose update was skipped), whether it was finite, the learning signal's sums over
    its images (:mod:`dsod.engine.learning`), and the total norm of its gradients before
    any clipping (NaN for a skipped update): how far the step would move the weights,
    per unit of learning rate."""

    loss: float
    loc_loss: float
    conf_loss: float
    skipped_samples: tuple[int, ...]  # data-set indices of unreadable samples replaced
    finite: bool
    signal: SignalSums = field(default_factory=SignalSums)
    grad_norm: float = math.nan


def _all_finite(value: torch.Tensor) -> bool:
    """Whether ``value`` is finite in every process (all skip a step together)."""
    flag = torch.isfinite(value.detach()).all().float()
    return bool(dist.all_reduce_mean(flag).item() == 1.0)


def train_step(
    network: Network,
    criterion: nn.Module,
    state: TrainingState,
    micro_batches: Iterable[TrainingBatch],
    count: int,
    grad_clip: float = 0.0,
) -> StepResult:
    """Forward and backward over ``count`` micro-batches (:class:`TrainingBatch`: their
    ``skipped`` is the caller's to count; the loss of each divided by
    ``count``: one step over their union), then one update of ``state``'s optimizer and
    schedule; ``state.step`` advances by one.

    A non-finite loss or gradient in any process skips the update (the schedule still
    advances): the result is then ``finite=False`` with NaN losses, and the caller decides
    how many in a row it accepts. Under DDP gradients are all-reduced once, at the last
    micro-batch. ``grad_clip`` > 0 clips the gradients' total norm to it.
    """
    state.optimizer.zero_grad(set_to_none=True)
    device = network.settings.device
    totals = torch.zeros(3, device=device)
    signal = SignalSums()
    finite = True
    norm = torch.tensor(math.nan, device=device)  # the update's, when it is taken
    for micro, batch in enumerate(micro_batches):
        target_offsets = batch.target_offsets.to(device, non_blocking=True)
        target_labels = batch.target_labels.to(device, non_blocking=True)
        with network.no_sync(skip=micro < count - 1):
            logits, offsets = network.run(batch.images)
            losses = criterion(logits, offsets, target_offsets, target_labels)
            if not _all_finite(losses["loss"]):
                finite = False
                continue
            state.scaler.scale(losses["loss"] / count).backward()
        signal.add(signal_sums(logits, offsets, target_offsets, target_labels))
        totals += (
            torch.stack([losses["loss"], losses["loc_loss"], losses["conf_loss"]]).detach() / count
        )
    if finite:
        state.scaler.unscale_(state.optimizer)
        average_gradients(state.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip or math.inf)
        finite = state.scaler.is_enabled() or _all_finite(norm)
    if finite:
        state.scaler.step(state.optimizer)
    else:
        state.optimizer.zero_grad(set_to_none=True)
    state.scaler.update()
    with warnings.catch_warnings():  # a skipped update still advances the schedule
        warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
        state.scheduler.step()
    state.step += 1
    # One all-reduce and one read for the losses, the signal's sums and the gradients'
    # norm (means over processes: the signal's ratios are unchanged by it, and the norm of
    # the all-reduced gradients is the same in every process).
    sums = torch.tensor([signal.total, signal.squares, signal.images], device=device)
    reduced = dist.all_reduce_mean(torch.cat([totals, sums, norm.float().reshape(1)])).tolist()
    losses = reduced[:3] if finite else [math.nan] * 3
    return StepResult(
        *losses,
        skipped_samples=(),
        finite=finite,
        signal=SignalSums(*reduced[3:6]),
        grad_norm=reduced[6] if finite else math.nan,
    )
