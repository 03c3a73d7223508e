"""The demo's errors: an input it cannot read or an output it cannot write."""

from __future__ import annotations

from dsod.data.errors import DataError


class DemoError(DataError):
    """An input the demo cannot read or an output it cannot write; names the file."""


class UnreadableInputError(DemoError):
    """A video file or camera that gives no frame; the demo skips it and goes on."""
