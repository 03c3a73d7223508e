"""Config files: read a YAML experiment file into a config, write one back.

Reading refuses a file that is missing, not UTF-8, not YAML or gives a key twice, with
a :class:`~dsod.config.schema.ConfigError` that says which and where. What
:func:`save_config` writes, :func:`load_config` reads back to an equal config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from dsod.config.build import config_from_dict, config_to_dict
from dsod.config.schema import Config, ConfigError
from dsod.config.strict_yaml import _DuplicateKeyError, _StrictLoader


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
        raise ConfigError(
            f"{path} is not UTF-8 text: byte 0x{error.object[error.start]:02x} "
            f"on line {line}; save the file as UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader) or {}
    except _DuplicateKeyError as error:
        raise ConfigError(
            f"duplicate key {error.key} on line {error.line} of {path} (first "
            f"on line {error.first_line}); give each key once"
        ) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    return config_from_dict(raw, str(path), overrides)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, loadable with :func:`load_config`."""
    Path(path).write_text(
        yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8"
    )
