"""Checkpoints: written atomically, read without running code, checked against the model.

A checkpoint is a dict of tensors and plain Python values (no pickled classes), so it
loads with ``torch.load(weights_only=True)``: a file from the internet cannot run code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsod.config import Config, ConfigError, config_from_dict, config_to_dict
from dsod.config.labels import with_background

logger = logging.getLogger(__name__)

_STEP_FILE = re.compile(r"checkpoint_(\d+)\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def save_atomic(state: Mapping[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` via a temporary file, fsync and rename, so that a crash
    or a full disk while saving leaves the previous file intact (or none, when there was
    none; the error says which)."""
    path = Path(path)
    previous = "the previous file is intact" if path.exists() else "no file was written"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise CheckpointError(
            f"cannot write checkpoint {path}: {error.strerror or error}"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; other outputs follow the umask
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(error, (OSError, RuntimeError)):  # torch.save: full disk = RuntimeError
            raise
        raise CheckpointError(
            f"cannot write checkpoint {path}: "
            f"{getattr(error, 'strerror', None) or error} "
            f"({_free_space(path.parent)}; {previous})"
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:,.0f} MiB free on its disk"
    except OSError:
        return "free space unknown"


def _unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in a user's words."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
        # a readable checkpoint, zip or legacy format, whose contents were refused
        return (
            "it holds objects other than tensors and plain values, which are refused "
            "because loading them could run code (dsod checkpoints hold none)"
        )
    if not zipfile.is_zipfile(path):
        return (
            "it is not a PyTorch checkpoint (not a zip archive: truncated, or another kind "
            "of file)"
        )
    if isinstance(error, pickle.UnpicklingError):
        return (
            "it holds objects other than tensors and plain values, which are refused "
            "because loading them could run code (dsod checkpoints hold none)"
        )
    return f"{type(error).__name__}: {error}"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, truncated, not a checkpoint, or holds
            objects other than tensors and plain values.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means unusable
        raise CheckpointError(
            f"cannot read checkpoint {path}: {_unreadable_reason(path, error)}"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a dsod checkpoint (no 'model' entry)")
    return state


def load_model_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Load weights strictly, with an error listing every missing, unexpected and
    mis-shaped key (a checkpoint made for another config)."""
    if any(key.startswith("module.") for key in state_dict):
        state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in state_dict and state_dict[key].shape != own[key].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"{source} does not fit this model (was it made with another config?)"]
        for title, items in (
            ("mismatched shapes", mismatched),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
        ):
            if items:
                shown = items[:20] + (
                    [f"... and {len(items) - 20} more"] if len(items) > 20 else []
                )
                lines.append(f"  {title}:\n    " + "\n    ".join(shown))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state_dict)


def non_finite_tensors(state_dict: Mapping[str, Any]) -> list[str]:
    """The names of the floating-point tensors of ``state_dict`` that hold a NaN or an
    infinity (weights of a run that diverged: the network then detects nothing)."""
    return [
        name
        for name, value in state_dict.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]


def warn_non_finite(state_dict: Mapping[str, Any], source: str) -> None:
    """Log a warning naming ``source`` and its tensors that hold NaN or infinity."""
    bad = non_finite_tensors(state_dict)
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        logger.warning(
            "%s holds NaN or infinite values in %d of its %d tensors (%s): its "
            "detections are meaningless (did the run diverge?)",
            source,
            len(bad),
            len(state_dict),
            shown,
        )


# Settings that change what a trained network's outputs mean without changing the shape of
# any weight (so loading the weights cannot catch them): the priors its offsets are
# encoded against, and the input size and mean it was trained with. None: every key.
PREDICTION_SETTINGS: tuple[tuple[str, str | None], ...] = (
    ("priors", None),
    ("model", "input_size"),
    ("augment", "mean_bgr"),
)


def adopt_checkpoint_settings(config: Config, state: Mapping[str, Any], source: str) -> Config:
    """``config`` with what it leaves to the data taken from the checkpoint's own record:
    the fitted priors when ``priors.fit`` is true, the class list when
    ``data.class_names`` is null on VOC-layout data. Training resolved both from its data
    and saved them, so the own-data config evaluates its checkpoints as it is. (A COCO
    JSON names its own classes; the checkpoint's are then checked against them.)

    Raises:
        CheckpointError: ``priors.fit`` is true but the checkpoint records no priors.
    """
    saved = state.get("config")
    if config.priors.fit:
        priors = saved.get("priors") if isinstance(saved, Mapping) else None
        if not isinstance(priors, Mapping):
            raise CheckpointError(
                f"{source} records no priors, and priors.fit=true leaves "
                f"them to it: give the priors the model was trained with"
            )
        try:
            fitted = config_from_dict({"priors": {**priors, "fit": False}}, source).priors
        except ConfigError as error:
            raise CheckpointError(f"{source}: its priors cannot be read ({error})") from None
        config = dataclasses.replace(config, priors=fitted)
        logger.info(
            "priors.fit: the priors %s was trained with: min_sizes %s, max_sizes %s, "
            "aspect_ratios %s",
            source,
            list(fitted.min_sizes),
            list(fitted.max_sizes),
            [list(r) for r in fitted.aspect_ratios],
        )
    names = state.get("class_names")
    if (
        config.data.class_names is None
        and config.data.format != "coco"
        and isinstance(names, (list, tuple))
        and names
        and all(isinstance(n, str) for n in names)
    ):
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, class_names=tuple(names))
        )
    elif (
        config.data.class_names is None
        and config.model.num_classes is None
        and isinstance(names, (list, tuple))
        and names
    ):
        # COCO: the JSON names the classes; the checkpoint says how many the model has
        config = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, num_classes=with_background(len(names))),
        )
    return config


def check_prediction_settings(trained_with: Any, config: Config, source: str) -> None:
    """Refuse to run a checkpoint under a config that reads its outputs differently.

    Args:
        trained_with: the config saved in the checkpoint (``state["config"]``, plain data);
            nothing is checked when it is missing.
        config: the config the model is about to be built and decoded with.
        source: names the checkpoint in the message.

    Raises:
        CheckpointError: a setting of :data:`PREDICTION_SETTINGS` differs; the message lists
            each with both values. Otherwise the detections would be silently wrong, e.g.
            decoded against other priors.
    """
    if not isinstance(trained_with, Mapping):
        return
    current = config_to_dict(config)
    differences = []
    for section, only in PREDICTION_SETTINGS:
        saved = trained_with.get(section)
        if not isinstance(saved, Mapping):
            continue
        for key in [only] if only else sorted(current[section]):
            if key in saved and saved[key] != current[section][key]:
                differences.append(
                    f"{section}.{key}: trained with {saved[key]}, the config "
                    f"gives {current[section][key]}"
                )
    if differences:
        raise CheckpointError(
            f"{source} was trained with other settings than this config, and its detections "
            f"would be decoded wrongly:\n  " + "\n  ".join(differences) + "\nUse the training "
            "run's config (its output folder holds config.yaml) or the same overrides."
        )


class CheckpointManager:
    """Keeps ``checkpoint_<step>.pth`` files in a folder: the last ``keep`` of them, plus
    ``best.pth`` and ``final.pth``."""

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.directory = Path(directory)
        self.keep = max(1, keep)

    def step_files(self) -> list[tuple[int, Path]]:
        """Existing step checkpoints, oldest first."""
        found = []
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                match = _STEP_FILE.match(path.name)
                if match:
                    found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        path = self.directory / f"checkpoint_{step:08d}.pth"
        save_atomic(state, path)
        for _, old in self.step_files()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def save_named(self, state: Mapping[str, Any], name: str) -> Path:
        path = self.directory / f"{name}.pth"
        save_atomic(state, path)
        return path

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest step checkpoint that reads; damaged newer ones are skipped with a
        warning. ``None`` when there is none."""
        for _, path in reversed(self.step_files()):
            try:
                return path, load_checkpoint(path)
            except CheckpointError as error:
                logger.warning("skipping damaged checkpoint: %s", error)
        return None
