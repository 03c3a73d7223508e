"""Why a training run stops before ``solver.max_iter``, decided by all processes together.

Owns the three early stops: a stop signal (Ctrl-C or SIGTERM: finish the step, save, stop;
a second signal stops at once), too many unreadable training images
(``train.max_bad_sample_fraction``) and too many non-finite steps in a row
(``train.max_nonfinite_steps``); and the per-step agreement across DDP processes that lets
them all stop at the same step. The policies here decide and word the error; the training
loop saves the checkpoint and raises it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from dsod.data.errors import DataError
from dsod.engine import distributed as dist
from dsod.engine.bad_samples import BadSamples
from dsod.engine.optim import smaller_steps

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many steps in a row had a non-finite loss or gradient."""


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM, while :meth:`caught`: the first is recorded in
    :attr:`received` (the loop finishes the step, saves a checkpoint and stops); a second
    raises ``KeyboardInterrupt`` at once."""

    def __init__(self) -> None:
        self.received: int | None = None

    @contextlib.contextmanager
    def caught(self) -> Iterator[None]:
        """Install the handlers, restoring the previous ones at exit. Only in the main
        thread, where Python delivers signals (elsewhere nothing is caught)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self.received is not None:
                raise KeyboardInterrupt
            self.received = signum
            logger.warning(
                "signal %d: finishing this step, then saving a checkpoint (send it "
                "again to stop at once)",
                signum,
            )

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def agree(
    stop_requested: bool, bad: BadSamples, seen: int, device: torch.device
) -> tuple[bool, int]:
    """What all processes decide on together after a step (every process calls it): whether
    any was asked to stop, and the training samples seen, summed over processes; unreadable
    files found by any process are shared with all (:meth:`BadSamples.share`)."""
    if not dist.is_distributed():
        return stop_requested, seen
    local = torch.tensor(
        [float(stop_requested), bad.new_count(), seen], dtype=torch.float64, device=device
    )
    total = (dist.all_reduce_mean(local) * dist.world_size()).tolist()
    if total[1] > 0:
        bad.share()
    return total[0] > 0, round(total[2])


def too_many_bad_samples(
    bad: BadSamples, seen: int, training_samples: int, checkpoints: Path
) -> DataError | None:
    """The error to stop with when, after at least one pass over the training set
    (``seen`` samples over all processes, of ``training_samples``), more than
    ``train.max_bad_sample_fraction`` of its images could not be used (distinct files,
    over all processes, so that all stop together); ``None`` to go on."""
    if seen < training_samples or not bad.over_limit():
        return None
    return DataError(
        f"{bad.describe()}, more than train.max_bad_sample_fraction = "
        f"{bad.limit} ({bad.kinds()}); the log names them and "
        f"tools/check_dataset.py lists every unreadable file. Fix or remove them (or raise "
        f"the limit), then continue with --resume from {checkpoints}"
    )


class NonFiniteSteps:
    """Counts the steps in a row whose loss or gradient was not finite (their update was
    skipped); ``limit`` of them stop the run (``train.max_nonfinite_steps``). The error
    ends with ``advice`` (:func:`dsod.engine.optim.smaller_steps` of the run's solver)."""

    def __init__(self, limit: int, advice: str = smaller_steps()) -> None:
        self.limit = limit
        self.advice = advice
        self.in_a_row = 0

    def after_step(self, finite: bool, step: int, checkpoints: Path) -> NonFiniteLossError | None:
        """Count ``step`` (warning when it was skipped); the error to stop with at the
        limit, else ``None``."""
        if finite:
            self.in_a_row = 0
            return None
        self.in_a_row += 1
        logger.warning(
            "step %d: non-finite loss or gradient, update skipped (%d in a row)",
            step,
            self.in_a_row,
        )
        if self.in_a_row < self.limit:
            return None
        return NonFiniteLossError(
            f"{self.in_a_row} steps in a row had a non-finite loss or gradient "
            f"(step {step}); saved a checkpoint in {checkpoints}. "
            f"The steps are too large for this start: {self.advice}."
        )
