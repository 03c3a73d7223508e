"""What the demo says as it goes: skipped inputs on stderr, and the speed of each run."""

from __future__ import annotations

import sys

from dsod.data.errors import DataError


def skip(error: DataError | str, unreadable: list[str]) -> None:
    """Note an input that cannot be read: one line on stderr, and in ``unreadable``."""
    print(f"skipped: {error}", file=sys.stderr)
    unreadable.append(str(error))


def report(what: str, frames: int, seconds: float, detect_seconds: float, out: str) -> None:
    """Print the frame rate of a run, overall and of the detector alone, and where it went."""
    fps = frames / seconds if seconds > 0 else float("inf")
    det_fps = frames / detect_seconds if detect_seconds > 0 else float("inf")
    print(
        f"{what}: {frames} frame(s) in {seconds:.2f} s, {fps:.1f} fps "
        f"(detector alone {det_fps:.1f} fps) -> {out}"
    )
