"""What a training checkpoint holds, and resuming a run from it bit for bit.

Owns the state of a run between steps (weights, optimizer, schedule, loss scaler, step,
best score, CPU random state), its checkpoint dict (``state_dict``: tensors and plain
values, see :mod:`dsod.engine.checkpoint`), and loading it back with errors that say
which part does not fit the config. A resumed run continues as if never stopped: the same
next losses.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsod.config import Config, config_to_dict
from dsod.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_prediction_settings,
    load_model_weights,
)
from dsod.engine.ema import WeightAverage
from dsod.engine.resume_check import check_resume_settings

logger = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """The parts of a run that a checkpoint saves and :meth:`resume` restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    step: int = 0
    best_map: float = -math.inf  # VOC07 mAP of best.pth
    ema: WeightAverage | None = None  # the weights' moving average (solver.ema)

    @property
    def eval_model(self) -> nn.Module:
        """The weights a run evaluates and a trained model is read back with: the moving
        average where the run keeps one, else the trained weights."""
        return self.ema.model if self.ema is not None else self.model

    def state_dict(self, config: Config, class_names: Sequence[str]) -> dict[str, Any]:
        """The checkpoint dict; ``config`` and ``class_names`` are the run's resolved ones
        (what evaluating the checkpoint needs)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best_map": self.best_map,
            "torch_rng": torch.get_rng_state(),
            "config": config_to_dict(config),
            "class_names": list(class_names),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load(
        self, state: Mapping[str, Any], path: Path, config: Config, out_dir: Path, amp: str
    ) -> None:
        """Restore every part from checkpoint ``state`` read from ``path``.

        Raises:
            CheckpointError: the checkpoint decodes its outputs differently from ``config``,
                its weights, optimizer or scheduler do not fit the objects built from it
                (the message points to the run's own ``config.yaml`` in ``out_dir``), or it
                was trained with settings a resume cannot change
                (:func:`~dsod.engine.resume_check.check_resume_settings`).
        """
        check_prediction_settings(state.get("config"), config, f"checkpoint {path}")
        load_model_weights(self.model, state["model"], str(path))
        for name, part in (("optimizer", self.optimizer), ("scheduler", self.scheduler)):
            try:
                part.load_state_dict(state[name])
            except (KeyError, ValueError, RuntimeError, TypeError) as error:
                raise CheckpointError(
                    f"cannot resume from {path}: its {name} state does not fit this config "
                    f"({type(error).__name__}: {error}); resume with the run's own config "
                    f"(config.yaml in {out_dir}) or start a new run"
                ) from None
        check_resume_settings(state.get("config"), config, int(state["step"]), str(path), out_dir)
        scaler_state = state.get("scaler") or {}
        if self.scaler.is_enabled() and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        elif self.scaler.is_enabled() != bool(scaler_state):
            logger.warning(
                "--resume: the run used train.amp=%s loss scaling differently; the "
                "scaler starts afresh",
                amp,
            )
        if self.ema is not None:
            if isinstance(state.get("ema"), Mapping):
                load_model_weights(self.ema.model, state["ema"]["weights"], f"{path} (ema)")
                self.ema.averaged.n_averaged.fill_(int(state["ema"]["updates"]))
            else:
                logger.warning(
                    "--resume: %s holds no weight average (solver.ema); it starts "
                    "from the resumed weights",
                    path,
                )
                self.ema = WeightAverage(self.model, self.ema.decay)
        self.step = int(state["step"])
        self.best_map = float(state.get("best_map", -math.inf))
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])


def resume_latest(
    state: TrainingState, checkpoints: CheckpointManager, config: Config, out_dir: Path, amp: str
) -> bool:
    """Load the newest readable step checkpoint into ``state`` (:meth:`TrainingState.load`);
    ``False``, with a warning, when there is none (the run starts from scratch)."""
    found = checkpoints.latest()
    if found is None:
        logger.warning(
            "--resume: no checkpoint in %s, starting from scratch", checkpoints.directory
        )
        return False
    path, saved = found
    state.load(saved, path, config, out_dir, amp)
    logger.info("resumed from %s at step %d", path, state.step)
    return True


def refuse_to_overwrite(checkpoints: CheckpointManager) -> None:
    """A new run must not mix its checkpoints with another run's.

    Raises:
        CheckpointError: ``checkpoints`` already holds step checkpoints.
    """
    if checkpoints.step_files():
        raise CheckpointError(
            f"{checkpoints.directory} already holds the checkpoints of a run (up to "
            f"step {checkpoints.step_files()[-1][0]}): pass --resume to continue it, "
            f"or give another --out for a new run"
        )
