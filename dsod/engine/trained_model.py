"""A trained detector read back from a checkpoint: the one way evaluation and the Python API
load one.

:func:`load_trained_model` does it in one call. ``tools/eval.py`` takes its two steps
itself, so that it can check the test split between them: :func:`checkpoint_config`
resolves the config once, and :func:`build_trained_model` builds the network from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dsod.config import Config, config_from_dict, config_to_dict, load_config
from dsod.engine.builders import build_model
from dsod.engine.checkpoint import (
    CheckpointError,
    adopt_checkpoint_settings,
    check_prediction_settings,
    load_checkpoint,
    load_model_weights,
    warn_non_finite,
)

__all__ = [
    "TrainedModel",
    "build_trained_model",
    "checkpoint_config",
    "load_trained_model",
    "recorded_class_names",
]


@dataclass
class TrainedModel:
    """A checkpoint's network with the config it runs under.

    Attributes:
        model: the paper's network (fp32, on the CPU, training mode as built) holding the
            checkpoint's weights; ``images [B, 3, S, S] -> (logits [B, P, C+1], offsets
            [B, P, 4])``.
        config: the config the network was built from: the one given (or the one saved in
            the checkpoint), with the class list and fitted priors the run resolved from
            its data (:func:`~dsod.engine.checkpoint.adopt_checkpoint_settings`).
        class_names: the ``C`` class names the checkpoint records, or None for a
            checkpoint without them.
        source: ``"checkpoint <path>"``, for messages.
    """

    model: nn.Module
    config: Config
    class_names: list[str] | None
    source: str


def _config_for(
    path: str | Path,
    state: Mapping[str, Any],
    config: Config | str | Path | None,
    overrides: Sequence[str],
) -> Config:
    if config is None:
        raw = state.get("config")
        if not isinstance(raw, dict):
            raise CheckpointError(
                f"checkpoint {path} holds no config: give the config it was "
                f"trained with (--config CONFIG in the tools, config= in "
                f"Python)"
            )
        return config_from_dict(raw, f"the config in checkpoint {path}", overrides)
    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    if overrides:
        return config_from_dict(config_to_dict(config), "<config>", overrides)
    return config


def checkpoint_config(
    checkpoint: str | Path,
    state: Mapping[str, Any],
    config: Config | str | Path | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """The config a checkpoint's network runs under, resolved once.

    Args:
        checkpoint: the checkpoint's path, for messages.
        state: its contents (:func:`~dsod.engine.checkpoint.load_checkpoint`).
        config: None takes the config saved in the checkpoint; a path is loaded with
            :func:`~dsod.config.load_config`; a :class:`Config` is used as it is.
        overrides: ``key=value`` config overrides (e.g. ``test.nms_iou=0.5``).

    Returns:
        The config with what it leaves to the data taken from the checkpoint (class list,
        fitted priors: :func:`~dsod.engine.checkpoint.adopt_checkpoint_settings`), checked
        to read the network's outputs as training did.

    Raises:
        CheckpointError: the checkpoint has no config (and none was given), or was trained
            with other priors, input size or mean than the config gives.
        ConfigError: the config or an override is invalid.
    """
    source = f"checkpoint {checkpoint}"
    resolved = adopt_checkpoint_settings(
        _config_for(checkpoint, state, config, overrides), state, source
    )
    check_prediction_settings(state.get("config"), resolved, source)
    return resolved


def recorded_class_names(state: Mapping[str, Any]) -> list[str] | None:
    """The ``C`` class names a checkpoint records, or None for one without them."""
    recorded = state.get("class_names")
    return [str(n) for n in recorded] if isinstance(recorded, (list, tuple)) else None


def build_trained_model(
    checkpoint: str | Path, state: Mapping[str, Any], config: Config
) -> TrainedModel:
    """The network of ``config`` holding the checkpoint's weights.

    Args:
        checkpoint: the checkpoint's path, for messages.
        state: its contents (``{"model": state_dict, "config": ..., "class_names": [...]}``,
            and ``"ema": {"weights": state_dict, ...}`` for a run that kept a moving average
            of its weights: those are the ones read).
        config: the config the network runs under, as :func:`checkpoint_config` resolves it.

    Weights that hold NaN or infinity (a run that diverged) are loaded with a warning
    naming the file and the tensors.

    Raises:
        CheckpointError: the weights do not fit the config's model (the message lists the
            keys), or the checkpoint names another number of classes than the model has.
    """
    source = f"checkpoint {checkpoint}"
    model = build_model(config)
    # A run that kept a moving average of its weights (solver.ema) evaluated with it.
    average = state.get("ema")
    if isinstance(average, Mapping) and "weights" in average:
        load_model_weights(model, average["weights"], source=f"{source} (ema)")
    else:
        load_model_weights(model, state["model"], source=source)
    names = recorded_class_names(state)
    if names is not None and len(names) != config.num_object_classes:
        raise CheckpointError(
            f"{source} names {len(names)} classes {names} for a model with "
            f"{config.num_object_classes}"
        )
    warn_non_finite(model.state_dict(), source)
    return TrainedModel(model, config, names, source)


def load_trained_model(
    checkpoint: str | Path,
    config: Config | str | Path | None = None,
    overrides: Sequence[str] = (),
) -> TrainedModel:
    """Read ``checkpoint`` and build its network: :func:`checkpoint_config`, then
    :func:`build_trained_model`.

    Args:
        checkpoint: a file written by training.
        config: None takes the config saved in the checkpoint; a path is loaded with
            :func:`~dsod.config.load_config`; a :class:`Config` is used as it is.
        overrides: ``key=value`` config overrides (e.g. ``test.nms_iou=0.5``).

    Raises:
        CheckpointError: the file is unreadable, or as :func:`checkpoint_config` and
            :func:`build_trained_model` raise it.
        ConfigError: the config or an override is invalid.
    """
    state = load_checkpoint(checkpoint)
    return build_trained_model(
        checkpoint, state, checkpoint_config(checkpoint, state, config, overrides)
    )
