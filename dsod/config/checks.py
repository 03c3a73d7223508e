"""The checks of a built config: choices, ranges, finiteness and settings that must agree.

Types are checked while the config is built; this checks the values against the tables
of :mod:`dsod.config.rules` and across fields (one prior entry per prediction source,
``[low, high]`` pairs, the number of classes, the schedule, ...).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from dsod.config.class_names import describe_clashes, find_clashes
from dsod.config.labels import with_background
from dsod.config.rules import _CHOICES, _LOW_HIGH, _RANGES
from dsod.config.schema import _SECTION_TYPES, Config, ConfigError


def _numbers(value: Any, index: str = "") -> typing.Iterator[tuple[str, int | float]]:
    """The numbers in a setting's value with their ``[i]`` indices (nested lists too)."""
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _numbers(item, f"{index}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield index, value


def _validate(config: Config, source: str, origins: dict[tuple[str, str], str]) -> None:
    """Raise :class:`ConfigError` for the first value of ``config`` that is not allowed.

    ``source`` is the file (or ``<dict>``) the config came from; ``origins`` maps each
    ``(section, key)`` an override set to that override, so that a message names the
    override that caused the error, else the file.
    """

    def where(key: str, *related: str) -> str:
        """``section.key in <origin>``: the override that set ``key`` or one of ``related``
        (the other keys the check depends on), else the file."""
        for dotted in (key, *related):
            section, _, name = dotted.partition(".")
            name = name.partition("[")[0]
            if (section, name) in origins:
                return f"{key} in {origins[section, name]}"
        return f"{key} in {source}"

    for (section, key), choices in _CHOICES.items():
        value = getattr(getattr(config, section), key)
        if value not in choices:
            raise ConfigError(f"{where(f'{section}.{key}')}: {value!r} is not one of {choices}")
    for section in _SECTION_TYPES:
        values = getattr(config, section)
        for f in dataclasses.fields(values):
            rule = _RANGES.get((section, f.name))
            for index, number in _numbers(getattr(values, f.name)):
                if not math.isfinite(number):
                    raise ConfigError(
                        f"{where(f'{section}.{f.name}{index}')}: expected a "
                        f"finite number, got {number!r}"
                    )
                if rule is not None and not rule[0](number):
                    raise ConfigError(
                        f"{where(f'{section}.{f.name}{index}')}: {rule[1]}, got {number!r}"
                    )
    for section, key in _LOW_HIGH:
        low, high = getattr(getattr(config, section), key)
        if low > high:
            raise ConfigError(
                f"{where(f'{section}.{key}')}: expected [low, high], got [{low!r}, {high!r}]"
            )
    names = config.data.class_names
    if names is not None and not names:
        raise ConfigError(
            f"{where('data.class_names')}: needs at least one class (null: the COCO JSON's)"
        )
    if names and not all(names):
        raise ConfigError(f"{where('data.class_names')}: a class name is empty")
    clashes = find_clashes(names or ())
    if clashes:
        raise ConfigError(
            f"{where('data.class_names')}: names one class more than once "
            f"({describe_clashes(clashes)}); names that differ only in case or "
            f"spacing are one class"
        )
    n_sources = len(config.priors.min_sizes)
    if n_sources == 0:
        raise ConfigError(f"{where('priors.min_sizes')}: needs one entry per prediction source")
    for key in ("max_sizes", "aspect_ratios"):
        if len(getattr(config.priors, key)) != n_sources:
            raise ConfigError(
                f"{where(f'priors.{key}', 'priors.min_sizes')}: needs "
                f"{n_sources} entries, one per prediction source, like "
                f"priors.min_sizes"
            )
    for i, (small, large) in enumerate(zip(config.priors.min_sizes, config.priors.max_sizes)):
        if large <= small:
            raise ConfigError(
                f"{where(f'priors.max_sizes[{i}]', 'priors.min_sizes')}: must be "
                f"larger than priors.min_sizes[{i}] ({small:g}), got {large:g}"
            )
    if config.priors.steps is not None and len(config.priors.steps) != n_sources:
        raise ConfigError(
            f"{where('priors.steps', 'priors.min_sizes')}: needs {n_sources} entries or null"
        )
    if len(config.priors.variances) != 4:
        raise ConfigError(
            f"{where('priors.variances')}: needs 4 entries (x, y, w, h), got "
            f"{len(config.priors.variances)}"
        )
    if config.model.arch == "dsod":
        if len(config.model.extra_widths) != n_sources - 1:
            raise ConfigError(
                f"{where('model.extra_widths', 'priors.min_sizes')}: needs "
                f"{n_sources - 1} entries (one per source after First)"
            )
        if len(config.model.block_layers) != 4:
            raise ConfigError(
                f"{where('model.block_layers')}: needs 4 entries, one per dense "
                f"block, got {len(config.model.block_layers)}"
            )
        if not config.model.stem_channels:
            raise ConfigError(f"{where('model.stem_channels')}: needs at least one entry")
    if (
        names is not None
        and config.model.num_classes is not None
        and config.model.num_classes != with_background(len(names))
    ):
        raise ConfigError(
            f"{where('model.num_classes', 'data.class_names')}: "
            f"{config.model.num_classes} does not match data.class_names "
            f"({len(names)} classes + background)"
        )
    solver = config.solver
    for key in ("warmup_iters", "steps"):
        for index, value in _numbers(getattr(solver, key)):
            if value >= 1 and value != int(value):
                raise ConfigError(
                    f"{where(f'solver.{key}{index}')}: expected a whole number "
                    f"of iterations or a fraction of solver.max_iter below 1, "
                    f"got {value!r}"
                )
    if solver.l2norm_per_head and solver.l2norm_lr is None:
        raise ConfigError(
            f"{where('solver.l2norm_per_head', 'solver.l2norm_lr')}: ties the heads' L2Norm "
            "scales where they learn at a rate of their own, and solver.l2norm_lr is null "
            "(give it a rate, or set solver.l2norm_per_head: false)"
        )
    if solver.batch_per_step is not None and solver.batch_size % solver.batch_per_step:
        # Each process cuts its share of the batch into micro-batches of batch_per_step
        # images; how many processes share it is known only at run time.
        raise ConfigError(
            f"{where('solver.batch_per_step', 'solver.batch_size')}: "
            f"{solver.batch_per_step} images per forward do not divide "
            f"solver.batch_size ({solver.batch_size})"
        )
