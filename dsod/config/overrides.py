"""Command-line overrides: ``SECTION.KEY=VALUE`` items, parsed and applied to a raw config.

A value is parsed as YAML (strictly: :mod:`dsod.config.strict_yaml`), so
``solver.steps=[100,200]`` is a list; an empty value is the empty string. Applying them
records which override set each key, so that a later error names the override.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from dsod.config.schema import _SECTION_TYPES, ConfigError
from dsod.config.strict_yaml import _StrictLoader


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


def _apply_overrides(
    raw: dict[str, Any], source: str, overrides: Sequence[str]
) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """``(merged, origins)``: ``raw`` with ``overrides`` applied, and where each came from.

    ``raw`` is left as it is (``merged`` copies it a level deep). ``origins`` maps each
    overridden ``(section, key)``, and ``(section, "")`` for each section an override
    introduced, to ``"override 'ITEM'"``, so that their errors name the override instead
    of the file. Raises :class:`ConfigError` for a malformed item or one whose section is
    not a mapping.
    """
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
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
    return merged, origins
