"""Errors and problem records shared by the data-set readers.

Two ways a reader reports trouble:

* an exception, :class:`DataError` (a ``ValueError``) or one of its subclasses, when a file
  cannot be used at all (a missing split file, malformed XML or JSON, an unreadable image);
  the message always names the file;
* a :class:`Problem` record for something the reader could work around (a box of zero size
  dropped, a box clipped to the image, a missing ``<size>`` read from the image instead).
  Readers collect them in a ``problems`` list; ``tools/check_dataset.py`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]

# The kinds of problem the readers and the checker report, for counting by kind.
PROBLEM_KINDS: tuple[str, ...] = (
    "missing_split",
    "malformed_annotation",
    "missing_image",
    "unreadable_image",
    "missing_size",
    "bad_size",
    "size_mismatch",
    "exif_orientation",
    "unknown_class",
    "class_variant",
    "bad_coordinates",
    "zero_size_box",
    "one_pixel_box",
    "box_clipped",
    "box_outside",
    "no_objects",
    "bad_field",
    "duplicate",
    "train_test_overlap",
    "bad_config",
)


class DataError(ValueError):
    """A data file that cannot be used; the message names the file."""


class SplitNotFoundError(DataError):
    """A data set root, split list or COCO annotation file that does not exist."""


class _FileError(DataError):
    """A :class:`DataError` about one file, with ``path`` and ``reason`` kept apart.

    Called with one argument it takes that as a ready-made message: this is how ``pickle``
    and PyTorch's ``DataLoader`` rebuild an exception raised in a worker process.
    """

    what = "file"

    def __init__(self, path: str | Path, reason: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        message = self.path if reason is None else f"cannot read {self.what} {self.path}: {reason}"
        super().__init__(message)

    def __reduce__(self):  # keep path and reason through pickling
        return (type(self), (self.path, self.reason))


class ImageReadError(_FileError):
    """An image file that is missing, empty, truncated or cannot be decoded."""

    what = "image"


class AnnotationError(_FileError):
    """An annotation file (VOC XML, COCO JSON, split list) that is missing or malformed."""

    what = "annotation file"


@dataclass(frozen=True)
class Problem:
    """One flaw found in a data set.

    Attributes:
        file: the file the problem is in (annotation, image or split list).
        message: what is wrong and what the reader did about it.
        severity: ``"error"`` when the sample (or split) cannot be used, ``"warning"`` when
            the reader worked around it (e.g. dropped or clipped a box).
        kind: a short category from :data:`PROBLEM_KINDS`, for summaries.
    """

    file: str
    message: str
    severity: Severity = "warning"
    kind: str = "other"

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} [{self.kind}] {self.file}: {self.message}"


def summarize_problems(problems: list[Problem], shown: int = 5) -> list[str]:
    """Short log lines for the problems a reader worked around: counts by kind, then the
    first ``shown`` problems with their files. Empty when there are none."""
    if not problems:
        return []
    counts: dict[tuple[str, str], int] = {}
    for problem in problems:
        key = (problem.severity, problem.kind)
        counts[key] = counts.get(key, 0) + 1
    lines = [", ".join(f"{n} {severity} {kind}" for (severity, kind), n in sorted(counts.items()))]
    lines += [str(problem) for problem in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"... and {len(problems) - shown} more: run tools/check_dataset.py for all")
    return lines
