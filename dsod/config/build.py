"""Between plain data and a :class:`~dsod.config.schema.Config`: keys, types, sections.

:func:`config_from_dict` takes the mapping a YAML file holds, applies the overrides,
checks every key and type (converting lists to tuples), builds the frozen dataclasses
and runs the value checks of :mod:`dsod.config.checks`. :func:`config_to_dict` is its
inverse, plain YAML-friendly data.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsod.config.checks import _validate
from dsod.config.class_names import clean_class_name
from dsod.config.overrides import _apply_overrides
from dsod.config.schema import _SECTION_TYPES, Config, ConfigError


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against a field's type annotation, with lists made tuples.

    Raises :class:`ConfigError` starting with ``where`` (``section.key in <origin>``, with
    ``[i]`` for a list entry) for a value of the wrong type.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: null is not allowed")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)}, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")


def _did_you_mean(name: str, known: Sequence[str], what: str, prefix: str = "") -> str:
    """``"; did you mean model.growth_rate?"`` for a close known name, else a list of all."""
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; known {what}: {', '.join(known)}"


def _build_section(
    cls: type,
    values: dict[str, Any],
    section: str,
    origins: dict[tuple[str, str], str],
    source: str,
) -> Any:
    """An instance of the section dataclass ``cls`` from the mapping ``values``.

    Raises :class:`ConfigError` for an unknown key (with the closest known one) or a value
    of the wrong type, naming the key and the override in ``origins`` or the ``source``.
    """
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        origin = origins.get((section, key), source)
        if key not in known:
            raise ConfigError(
                f"unknown key {section}.{key} in {origin}"
                + _did_you_mean(key, sorted(known), "keys", f"{section}.")
            )
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key} in {origin}")
    return cls(**kwargs)


def config_from_dict(
    raw: dict[str, Any], source: str = "<dict>", overrides: Sequence[str] = ()
) -> Config:
    """Build a :class:`Config` from a nested mapping plus dotted ``key=value`` overrides."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    merged, origins = _apply_overrides(raw, source, overrides)
    name = merged.pop("name", Path(source).stem if source != "<dict>" else "experiment")
    sections = {}
    for section, values in merged.items():
        if section not in _SECTION_TYPES:
            known = [*_SECTION_TYPES, "name"]
            raise ConfigError(
                f"unknown section {section!r} in "
                f"{origins.get((section, ''), source)}" + _did_you_mean(section, known, "sections")
            )
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"section {section} in {source}: expected a mapping")
        sections[section] = _build_section(
            _SECTION_TYPES[section], values, section, origins, source
        )
    config = _clean_class_names(Config(name=str(name), **sections))
    _validate(config, source, origins)
    return config


def _clean_class_names(config: Config) -> Config:
    """``config`` with ``data.class_names`` read as every class name is read (Unicode NFC,
    no surrounding whitespace: :func:`~dsod.config.class_names.clean_class_name`)."""
    names = config.data.class_names
    if not names:
        return config
    cleaned = tuple(clean_class_name(n) for n in names)
    if cleaned == names:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, class_names=cleaned))


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain YAML-friendly data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    out: dict[str, Any] = {"name": config.name}
    for section in _SECTION_TYPES:
        out[section] = {
            k: plain(v) for k, v in dataclasses.asdict(getattr(config, section)).items()
        }
    return out
