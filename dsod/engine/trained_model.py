"""A trained detector read back from a checkpoint: the one way evaluation and the Python API
load one (:func:`load_trained_model`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch import nn

from dsod.config import Config, config_from_dict, config_to_dict, load_config
from dsod.engine.checkpoint import (CheckpointError, adopt_checkpoint_settings,
                                    check_prediction_settings, load_checkpoint,
                                    load_model_weights, warn_non_finite)
from dsod.engine.builders import build_model

__all__ = ["TrainedModel", "load_trained_model"]


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


def _config_for(path: str | Path, state: Mapping[str, Any], config: Config | str | Path | None,
                overrides: Sequence[str]) -> Config:
    if config is None:
        raw = state.get("config")
        if not isinstance(raw, dict):
            raise CheckpointError(f"checkpoint {path} holds no config: give the config it was "
                                  f"trained with (--config CONFIG in the tools, config= in "
                                  f"Python)")
        return config_from_dict(raw, f"the config in checkpoint {path}", overrides)
    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    if overrides:
        return config_from_dict(config_to_dict(config), "<config>", overrides)
    return config


def load_trained_model(checkpoint: str | Path, config: Config | str | Path | None = None,
                       overrides: Sequence[str] = (), *,
                       check: Callable[[Config, list | None], None] | None = None,
                       state: Mapping[str, Any] | None = None) -> TrainedModel:
    """Read ``checkpoint`` and build its network.

    Args:
        checkpoint: a file written by training (``{"model": state_dict, "config": ...,
            "class_names": [...]}``, and ``"ema": {"weights": state_dict, ...}`` for a run
            that kept a moving average of its weights: those are the ones read).
        config: None takes the config saved in the checkpoint; a path is loaded with
            :func:`~dsod.config.load_config`; a :class:`Config` is used as it is.
        overrides: ``key=value`` config overrides (e.g. ``test.nms_iou=0.5``).
        check: called with the config (the checkpoint's settings adopted and checked) and
            the class names the checkpoint records (None without) before the network is
            built: evaluation checks the test split's classes there, so that a split of
            other classes is named as such rather than as weights that do not fit.
        state: the checkpoint's contents, when the caller has read them already.

    Weights that hold NaN or infinity (a run that diverged) are loaded with a warning
    naming the file and the tensors.

    Raises:
        CheckpointError: the file is unreadable, has no config (and none was given), its
            weights do not fit the config's model (the message lists the keys), it was
            trained with other priors, input size or mean than the config gives, or it
            names another number of classes than the model has.
        ConfigError: the config or an override is invalid.
    """
    source = f"checkpoint {checkpoint}"
    state = load_checkpoint(checkpoint) if state is None else state
    resolved = adopt_checkpoint_settings(_config_for(checkpoint, state, config, overrides),
                                         state, source)
    check_prediction_settings(state.get("config"), resolved, source)
    recorded = state.get("class_names")
    recorded = list(recorded) if isinstance(recorded, (list, tuple)) else None
    if check is not None:
        check(resolved, recorded)
    model = build_model(resolved)
    # A run that kept a moving average of its weights (solver.ema) evaluated with it.
    average = state.get("ema")
    if isinstance(average, Mapping) and "weights" in average:
        load_model_weights(model, average["weights"], source=f"{source} (ema)")
    else:
        load_model_weights(model, state["model"], source=source)
    names = [str(n) for n in recorded] if recorded is not None else None
    if names is not None and len(names) != resolved.num_classes - 1:
        raise CheckpointError(f"{source} names {len(names)} classes {names} for a model with "
                              f"{resolved.num_classes - 1}")
    warn_non_finite(model.state_dict(), source)
    return TrainedModel(model, resolved, names, source)
