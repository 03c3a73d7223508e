"""Experiment configuration: one YAML file per experiment, loaded into frozen dataclasses.

A config file has one section per dataclass of :mod:`dsod.config.schema` (``model``,
``priors``, ``data``, ...), each a flat mapping of field to value. Anything the file
leaves out takes the default written there. An unknown or mistyped key, or a value of
the wrong type, is a :class:`ConfigError` that names the key and the file.

Every number must lie in its setting's range (``_RANGES`` in :mod:`dsod.config.rules`),
and a key given twice in the file is refused rather than the last one silently winning.

Command-line overrides use the same dotted names: ``model.num_classes=4 data.root=/x``.
Values are parsed as YAML, so ``solver.steps=[100,200]`` and ``train.amp=bf16`` both work.
A float setting also takes ``1e-3``, which YAML 1.1 reads as a string. An error caused by
an override names the override, not the file.

The modules: ``schema`` (the settings and their defaults), ``rules`` (what values they
take), ``checks`` (a built config against the rules and across fields), ``build``
(plain data to and from a config), ``overrides`` (``SECTION.KEY=VALUE`` items),
``strict_yaml`` (the loader that refuses duplicate keys), ``files`` (load and save) and
``class_names`` (how every class name is read and when two name one class).
Import from ``dsod.config``; the names below are its API (the tables are the modules'
own internals).
"""

from dsod.config.build import config_from_dict, config_to_dict
from dsod.config.files import load_config, save_config
from dsod.config.overrides import parse_overrides
from dsod.config.rules import AMP_SETTINGS
from dsod.config.schema import (
    VOC_CLASSES,
    AugmentConfig,
    Config,
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    PriorConfig,
    SolverConfig,
    TestConfig,
    TrainConfig,
)

__all__ = [
    "AMP_SETTINGS",
    "VOC_CLASSES",
    "AugmentConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "PriorConfig",
    "SolverConfig",
    "TestConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_overrides",
    "save_config",
]
