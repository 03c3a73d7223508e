"""Experiment configuration: one YAML file per experiment, loaded into frozen dataclasses.

A config file has one section per dataclass below (``model``, ``priors``, ``data``, ...),
each a flat mapping of field to value. Anything the file leaves out takes the default
written here. An unknown or mistyped key, or a value of the wrong type, is a
:class:`ConfigError` that names the key and the file.

Every number must lie in its setting's range (``_RANGES``), and a key given twice in
the file is refused rather than the last one silently winning.

Command-line overrides use the same dotted names: ``model.num_classes=4 data.root=/x``.
Values are parsed as YAML, so ``solver.steps=[100,200]`` and ``train.amp=bf16`` both work.
A float setting also takes ``1e-3``, which YAML 1.1 reads as a string. An error caused by
an override names the override, not the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Sequence

import yaml

from dsod.config.checks import _validate
from dsod.config.rules import _CHOICES, _RANGES, AMP_SETTINGS
from dsod.config.schema import (
    _SECTION_TYPES, VOC_CLASSES, AugmentConfig, Config, ConfigError, DataConfig, LossConfig,
    ModelConfig, PriorConfig, SolverConfig, TestConfig, TrainConfig,
)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field's type annotation and convert lists to tuples."""
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


def _build_section(cls: type, values: dict[str, Any], section: str,
                   origins: dict[tuple[str, str], str], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        origin = origins.get((section, key), source)
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key} in {origin}"
                              + _did_you_mean(key, sorted(known), "keys", f"{section}."))
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key} in {origin}")
    return cls(**kwargs)


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: str, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key} on line {line} (first on line {first_line})")
        self.key, self.line, self.first_line = key, line, first_line


def _check_unique_keys(node: yaml.Node, prefix: str = "", seen_nodes: set | None = None) -> None:
    """Raise :class:`_DuplicateKeyError` for a key given twice in one mapping under ``node``."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias of a node already checked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            child = prefix
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                key = (key_node.tag, key_node.value)
                if key in first:
                    raise _DuplicateKeyError(prefix + key_node.value, line, first[key])
                first[key] = line
                child = f"{prefix}{key_node.value}."
            _check_unique_keys(value_node, child, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, prefix, seen_nodes)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping key given twice (PyYAML keeps the last)."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_unique_keys(node)
        return node


def _split_overrides(overrides: Sequence[str]) -> list[tuple[str, str, Any, str]]:
    """``(section, key, value, item)`` for each ``SECTION.KEY=VALUE`` item, in order."""
    split = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"override {item!r}: expected SECTION.KEY=VALUE")
        try:
            value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(f"override {item!r}: cannot parse the value: {error}") from None
        split.append((section, name, value, item))
    return split


def parse_overrides(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Turn ``["model.num_classes=4", ...]`` into ``{"model": {"num_classes": 4}}``."""
    nested: dict[str, dict[str, Any]] = {}
    for section, name, value, _ in _split_overrides(overrides):
        nested.setdefault(section, {})[name] = value
    return nested


def config_from_dict(raw: dict[str, Any], source: str = "<dict>",
                     overrides: Sequence[str] = ()) -> Config:
    """Build a :class:`Config` from a nested mapping plus dotted ``key=value`` overrides."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    # Where each overridden (section, key) was set, and each section an override introduced
    # as (section, ""), so that their errors name the override instead of the file.
    origins: dict[tuple[str, str], str] = {}
    for section, name, value, item in _split_overrides(overrides):
        target = merged.get(section)
        if target is None and section != "name":  # a section the file leaves out or empty
            target = merged[section] = {}
            if section not in raw:
                origins.setdefault((section, ""), f"override {item!r}")
        if not isinstance(target, dict):
            if section in _SECTION_TYPES:
                raise ConfigError(f"section {section} in {source}: expected a mapping")
            raise ConfigError(f"override {item!r}: {section} is not a section")
        target[name] = value
        origins[section, name] = f"override {item!r}"
    name = merged.pop("name", Path(source).stem if source != "<dict>" else "experiment")
    sections = {}
    for section, values in merged.items():
        if section not in _SECTION_TYPES:
            known = [*_SECTION_TYPES, "name"]
            raise ConfigError(f"unknown section {section!r} in "
                              f"{origins.get((section, ''), source)}"
                              + _did_you_mean(section, known, "sections"))
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"section {section} in {source}: expected a mapping")
        sections[section] = _build_section(_SECTION_TYPES[section], values, section, origins,
                                           source)
    config = Config(name=str(name), **sections)
    _validate(config, source, origins)
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML experiment file and apply ``key=value`` overrides.

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8, a key is unknown or given
            twice, or a type or value is wrong; the message names the key and the file, or
            the override that caused it.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = error.object.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{path} is not UTF-8 text: byte 0x{error.object[error.start]:02x} "
                          f"on line {line}; save the file as UTF-8") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKeyError as error:
        raise ConfigError(f"duplicate key {error.key} on line {error.line} of {path} (first "
                          f"on line {error.first_line}); give each key once") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return config_from_dict(raw, str(path), overrides)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain YAML-friendly data (tuples become lists)."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value
    out: dict[str, Any] = {"name": config.name}
    for section in _SECTION_TYPES:
        out[section] = {k: plain(v) for k, v in dataclasses.asdict(getattr(config, section)).items()}
    return out


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, loadable with :func:`load_config`."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False),
                          encoding="utf-8")
