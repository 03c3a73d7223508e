"""What a resumed run may change, and the refusal of everything else.

A resumed run continues from its checkpoint's weights, optimizer and schedule, so a
setting that shaped them (the learning rate, the batch, the augmentation, ...) cannot
take effect by changing the config: the run would go on with the old value while its
``config.yaml`` and checkpoints recorded the new one. :func:`check_resume_settings`
compares the config of a resume with the one the checkpoint records and refuses every
difference but those of :data:`RESUMABLE`, which take effect. The schedule is compared by
the iterations it resolves to: ``solver.max_iter`` may grow or shrink, but the warm-up
and the lr steps the run has already passed must stay where they were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsod.config import Config, config_to_dict
from dsod.engine.checkpoint import CheckpointError

RESUMABLE: tuple[str, ...] = (
    "name",
    "solver.max_iter",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.out_dir",
    "train.max_bad_sample_fraction",
    "train.max_nonfinite_steps",
    "data.workers",
    "data.root",
    "test.batch_size",
)
"""The settings a resume may change: the run's length, its evaluation, checkpoint and
logging cadence, where it writes and reads, how many loader processes it uses and when it
stops for bad data. Each takes effect from the resumed step on."""

# Compared by the schedule they resolve to (:func:`_schedule_differences`), not as written.
_SCHEDULE = ("solver.max_iter", "solver.warmup_iters", "solver.steps")


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` of a config dict (``config_to_dict``'s layout)."""
    flat = {}
    for section, values in config.items():
        if isinstance(values, Mapping):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


def _schedule_differences(recorded: Mapping[str, Any], config: Config, step: int) -> list[str]:
    """Where the part of the run already taken (up to ``step``) would have had another
    learning rate under ``config``'s schedule: a warm-up of another length, or other lr
    steps at or before ``step``. Fractions of ``max_iter`` are resolved with each config's
    own ``max_iter``."""
    try:
        before = dataclasses.replace(
            config.solver,
            max_iter=int(recorded["solver.max_iter"]),
            warmup_iters=recorded["solver.warmup_iters"],
            steps=tuple(recorded["solver.steps"]),
        ).schedule()
    except (KeyError, TypeError, ValueError):  # not recorded: nothing to compare
        return []
    after = config.solver.schedule()
    lines = []
    if step > 0 and before[0] != after[0]:
        lines.append(
            f"solver.warmup_iters: the run warmed up over {before[0]} iterations; "
            f"this config gives {after[0]} (solver.warmup_iters "
            f"{config.solver.warmup_iters} of solver.max_iter "
            f"{config.solver.max_iter}): give solver.warmup_iters={before[0]}"
        )
    passed_before = [s for s in before[1] if s <= step]
    passed_after = [s for s in after[1] if s <= step]
    if passed_before != passed_after:
        lines.append(
            f"solver.steps: up to step {step} the run dropped the learning rate at "
            f"{passed_before or 'no step'}; this config gives {passed_after or 'none'}"
            f" there (solver.steps {list(config.solver.steps)} of solver.max_iter "
            f"{config.solver.max_iter}): give the steps the run passed as iterations"
        )
    return lines


def check_resume_settings(
    recorded: Any, config: Config, step: int, source: str, out_dir: str | Path
) -> None:
    """Refuse to resume from a checkpoint under a config that differs from the one it was
    trained with, but for :data:`RESUMABLE` settings and a schedule that keeps the part
    already run.

    Args:
        recorded: the config the checkpoint records (``state["config"]``: ``config_to_dict``
            of the run's resolved config); nothing is checked when it is missing. Keys it
            lacks (an older checkpoint) are not compared.
        config: the resolved config of the resume (class list and fitted priors filled in,
            as the checkpoint's were).
        step: the step the checkpoint was saved at.
        source: names the checkpoint in the message.
        out_dir: the run's output folder, whose ``config.yaml`` holds the run's settings.

    Raises:
        CheckpointError: a setting differs; the message names each with both values and
            says how to go on.
    """
    if not isinstance(recorded, Mapping):
        return
    before, now = _flat(recorded), _flat(config_to_dict(config))
    differences = [
        f"{key}: the run has {before[key]!r}, this config gives {now[key]!r}"
        for key in now
        if key in before
        and before[key] != now[key]
        and key not in RESUMABLE
        and key not in _SCHEDULE
    ]
    differences += _schedule_differences(before, config, step)
    if differences:
        raise CheckpointError(
            f"cannot resume from {source}: the run was trained with other settings, which a "
            f"resume cannot change (the weights, optimizer and schedule it continues from "
            f"hold them):\n  " + "\n  ".join(differences) + f"\nResume with the run's own "
            f"settings (drop these overrides, or restore {Path(out_dir) / 'config.yaml'}), "
            f"or start a new run with another --out. A resume may change "
            f"{', '.join(RESUMABLE[1:])}."
        )
