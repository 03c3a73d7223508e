"""What every tool does around its work: load the config, set up logging, tune the C
allocator for large CPU tensors, and turn the errors a user can fix into one clear line
instead of a stack trace."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

from dsod.config import Config, ConfigError, load_config


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is the whole story for a user."""
    from dsod.data.errors import DataError
    from dsod.engine.checkpoint import CheckpointError
    from dsod.engine.run_lock import OutputFolderBusyError
    from dsod.engine.stopping import NonFiniteLossError
    from dsod.runtime.compiled import CompileError

    return (
        ConfigError,
        DataError,
        CheckpointError,
        NonFiniteLossError,
        CompileError,
        OutputFolderBusyError,
    )


def user_message(error: BaseException) -> str:
    """The message of a user error. One raised in a DataLoader worker comes back wrapped in
    the worker's whole traceback; only its last line, the original message, is kept."""
    text = str(error)
    if "Original Traceback (most recent call last):" not in text:
        return text
    last = next((line for line in reversed(text.splitlines()) if line.strip()), text)
    name, sep, message = last.partition(": ")
    return message if sep and " " not in name else last


def device_name(text: str) -> str:
    """An argparse ``type`` for ``--device``: ``text`` if torch knows that device and it is
    there (``cpu``, ``cuda``, ``cuda:1``, ...), else a usage error saying why."""
    import argparse

    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; expected cpu, cuda, cuda:N, ..."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA device is available here")
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise argparse.ArgumentTypeError(
            f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return text


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def run_guarded(work: Callable[[], int | None]) -> int:
    """Call ``work()`` and return its exit code (0 for None); a config, data, checkpoint or
    divergence problem prints ``error: ...`` and returns 2, Ctrl-C returns 130.

    First it lets the C allocator keep freed memory for reuse
    (:func:`~dsod.runtime.host_memory.reuse_freed_memory`; ``DSOD_SYSTEM_MALLOC=1`` opts
    out): large CPU tensors then cost no fresh page faults at every layer."""
    from dsod.runtime.host_memory import reuse_freed_memory

    reuse_freed_memory()
    try:
        code = work()
    except user_errors() as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. --out names a file, a read-only or full disk
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if code is None else int(code)


def run_tool(
    config_path: str, overrides: Sequence[str], work: Callable[[Config], int | None]
) -> int:
    """Set up logging, load ``config_path`` with ``overrides`` and call ``work(config)``
    under :func:`run_guarded`."""
    setup_logging()
    return run_guarded(lambda: work(load_config(config_path, overrides)))
