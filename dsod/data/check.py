"""Check a configured data set end to end: every annotation and every image.

Used by ``tools/check_dataset.py``. :func:`check_dataset` builds each configured split on
its own (so one missing split does not hide the others), collects the readers' problems,
decodes every image in a small thread pool (decoding releases the GIL) and adds problems
for unreadable or missing images, images whose size disagrees with their annotation,
images whose EXIF rotation their size cannot confirm, images without objects and images
in both the train and the test split. A split entry without images, no train split at
all, a split listed twice, or a split without a single usable box (e.g. class names that
the annotations do not use) is an error.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dsod.config import Config, DataConfig
from dsod.data.datasets import build_dataset, check_distinct_entries
from dsod.data.errors import (
    AnnotationError,
    DataError,
    ImageReadError,
    Problem,
    SplitNotFoundError,
)
from dsod.data.image_io import ambiguous_orientation, read_image
from dsod.structures import Annotation


@dataclass
class SplitSummary:
    """One configured split entry: ``split`` is "train" or "test", ``entry`` its name."""

    split: str
    entry: str
    images: int = 0
    boxes: int = 0
    difficult: int = 0
    usable: bool = True


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found."""

    problems: list[Problem] = field(default_factory=list)
    splits: list[SplitSummary] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        """Problems that would stop training (or lose an image)."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def counts(self) -> dict[tuple[str, str], int]:
        """``(severity, kind) -> count``."""
        return dict(Counter((p.severity, p.kind) for p in self.problems))

    @property
    def exit_code(self) -> int:
        """1 when there is an error, 0 when there are only warnings (or nothing)."""
        return 1 if self.errors else 0


def _split_error(error: DataError, split: str, entry: str) -> Problem:
    where = f"data.{split} entry {entry!r}"
    if isinstance(error, SplitNotFoundError):
        return Problem(where, str(error), "error", "missing_split")
    if isinstance(error, AnnotationError):
        return Problem(
            error.path,
            f"{error.reason or error}; the whole split is unusable",
            "error",
            "malformed_annotation",
        )
    return Problem(where, str(error), "error", "bad_config")


def _read(
    path: str, annotated_size: tuple[int, int]
) -> tuple[tuple[int, int] | None, ImageReadError | None, str | None]:
    """``((width, height), None, rotation)`` or ``(None, error, None)`` for one image file,
    read as training reads it (an EXIF rotation away from the annotated size is not
    applied); ``rotation`` says what an EXIF rotation that the size cannot confirm does
    (:func:`~dsod.data.image_io.ambiguous_orientation`)."""
    try:
        image = read_image(path, annotated_size)
    except ImageReadError as error:
        return None, error, None
    return (int(image.shape[1]), int(image.shape[0])), None, ambiguous_orientation(path)


def _check_empty_splits(report: CheckReport, data: DataConfig) -> None:
    """Errors for a split that gives nothing to train or evaluate on: no train entry, an
    entry without images, or a split (all its entries together) without a single box."""
    if not data.train:
        report.problems.append(
            Problem(
                "data.train", "names no split: there is nothing to train on", "error", "bad_config"
            )
        )
    for split in ("train", "test"):
        entries = [s for s in report.splits if s.split == split and s.usable]
        for summary in entries:
            if summary.images == 0:
                report.problems.append(
                    Problem(
                        f"data.{split} entry {summary.entry!r}",
                        "has no images (none is listed, "
                        "or every one was left out: see the problems above)",
                        "error",
                        "missing_split",
                    )
                )
                summary.usable = False
        images = sum(s.images for s in entries)
        if images and not sum(s.boxes for s in entries):
            report.problems.append(
                Problem(
                    f"data.{split} ({', '.join(repr(s.entry) for s in entries)})",
                    f"none of its {images} image(s) has a usable box (is there an annotations "
                    f"list? do data.class_names match the annotations' class names?)",
                    "error",
                    "no_objects",
                )
            )
            for summary in entries:
                summary.usable = False


SKIPPABLE = ("malformed_annotation", "unreadable_image", "missing_image")
"""Problems that cost one image: training skips it and evaluation leaves it out, up to
``train.max_bad_sample_fraction`` of a split's images."""


def check_dataset(
    data: DataConfig | Config,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
    max_bad_fraction: float | None = None,
) -> CheckReport:
    """Read every annotation and image of the configured train and test splits.

    Args:
        data: the data config (or a whole config).
        workers: threads decoding images.
        progress: called as ``progress(done, total)`` while images are read.
        max_bad_fraction: ``train.max_bad_sample_fraction`` (default: the config's, when a
            whole config is given, else 0.01). Images that cost only themselves (a
            malformed annotation file, an unreadable or missing image) are errors only when
            more than this fraction of a split has them, as training and evaluation then
            stop; fewer are warnings, as the run skips them and goes on.

    Returns:
        The report; ``report.exit_code`` is 1 if anything would stop training or
        evaluation.
    """
    if max_bad_fraction is None:
        max_bad_fraction = data.train.max_bad_sample_fraction if isinstance(data, Config) else 0.01
    if isinstance(data, Config):
        data = data.data
    report = CheckReport()
    # image path -> the first annotation that uses it, and in which splits it appears
    first: dict[str, Annotation] = {}
    splits_of: dict[str, set[str]] = {}
    for split in ("train", "test"):
        try:
            check_distinct_entries(data, split)
        except DataError as error:
            report.problems.append(Problem(f"data.{split}", str(error), "error", "bad_config"))
        for entry in data.train if split == "train" else data.test:
            summary = SplitSummary(split, entry)
            report.splits.append(summary)
            one = dataclasses.replace(data, train=(entry,), test=(entry,))
            try:
                dataset = build_dataset(one, split, strict=False)
            except DataError as error:
                report.problems.append(_split_error(error, split, entry))
                summary.usable = False
                continue
            report.problems.extend(dataset.problems)
            for problem in dataset.problems:
                if problem.severity == "error":
                    splits_of.setdefault(problem.file, set()).add(split)
            for ann in dataset.annotations:
                summary.images += 1
                summary.boxes += len(ann)
                summary.difficult += int(ann.difficult.sum())
                if len(ann) == 0:
                    report.problems.append(
                        Problem(
                            ann.image_path,
                            f"image {ann.image_id} has no objects (after dropping unusable boxes)",
                            "warning",
                            "no_objects",
                        )
                    )
                first.setdefault(ann.image_path, ann)
                splits_of.setdefault(ann.image_path, set()).add(split)

    _check_empty_splits(report, data)

    paths = list(first)
    sizes = [(first[path].width, first[path].height) for path in paths]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (path, (size, error, rotation)) in enumerate(
            zip(paths, pool.map(_read, paths, sizes)), 1
        ):
            if progress is not None:
                progress(done, len(paths))
            ann = first[path]
            if error is not None:
                kind = "unreadable_image" if os.path.exists(path) else "missing_image"
                report.problems.append(
                    Problem(path, f"image {ann.image_id}: {error.reason or error}", "error", kind)
                )
            elif size != (ann.width, ann.height):
                report.problems.append(
                    Problem(
                        path,
                        f"image {ann.image_id} is {size[0]}x"
                        f"{size[1]} but its annotation says {ann.width}x"
                        f"{ann.height}; training and evaluation resize "
                        f"it to {ann.width}x{ann.height}, the frame of "
                        f"its boxes",
                        "warning",
                        "size_mismatch",
                    )
                )
            if rotation is not None:
                report.problems.append(
                    Problem(
                        path,
                        f"image {ann.image_id}: its {rotation}, "
                        f"and its size cannot tell whether its boxes "
                        f"were drawn on the stored or the turned "
                        f"picture; training reads it turned, as viewers "
                        f"show it: check that its boxes fit (a tool that "
                        f"ignores EXIF draws them on the stored pixels)",
                        "warning",
                        "exif_orientation",
                    )
                )

    _downgrade_skippable(report, splits_of, max_bad_fraction)
    both = [p for p in paths if len(splits_of[p]) > 1]
    if both:
        report.problems.append(
            Problem(
                both[0],
                f"{len(both)} image(s) are in both the train "
                f"and the test split (this one among them)",
                "warning",
                "train_test_overlap",
            )
        )
    return report


def _downgrade_skippable(
    report: CheckReport, splits_of: dict[str, set[str]], limit: float
) -> None:
    """Turn the errors that cost one image each into warnings where a split has no more
    of them than ``limit`` of its images: training skips them, evaluation leaves them out."""
    bad: dict[str, set[str]] = {"train": set(), "test": set()}
    for problem in report.problems:
        if problem.severity == "error" and problem.kind in SKIPPABLE:
            for split in splits_of.get(problem.file, ()):
                bad[split].add(problem.file)
    within = {}
    for split in bad:
        total = sum(s.images for s in report.splits if s.split == split) + len(bad[split])
        within[split] = len(bad[split]) <= limit * total
    for index, problem in enumerate(report.problems):
        splits = splits_of.get(problem.file, set())
        if (
            problem.severity == "error"
            and problem.kind in SKIPPABLE
            and splits
            and all(within[s] for s in splits)
        ):
            report.problems[index] = dataclasses.replace(
                problem,
                severity="warning",
                message=f"{problem.message} (skipped: within train.max_bad_sample_fraction "
                f"= {limit})",
            )


def report_lines(report: CheckReport) -> list[str]:
    """Human-readable lines: one per problem, then per-split totals and counts by kind."""
    lines = [str(p) for p in report.problems]
    lines.append("")
    for s in report.splits:
        state = "" if s.usable else "  (UNUSABLE)"
        lines.append(
            f"{s.split:5s} {s.entry}: {s.images} images, {s.boxes} boxes "
            f"({s.difficult} difficult/crowd){state}"
        )
    counts = report.counts()
    if counts:
        lines.append("problems by kind:")
        for (severity, kind), n in sorted(counts.items()):
            lines.append(f"  {severity:7s} {kind:20s} {n}")
    n_err, n_warn = len(report.errors), len(report.warnings)
    verdict = (
        "NOT usable: fix the errors above"
        if n_err
        else "usable for training" + (" (warnings only)" if n_warn else "")
    )
    lines.append(f"{n_err} error(s), {n_warn} warning(s): {verdict}")
    return lines
