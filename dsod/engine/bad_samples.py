"""How many training images could not be used, counted as distinct files, and the limit.

Two kinds count against ``train.max_bad_sample_fraction``: images whose annotation file
could not be used (malformed XML and the like: the reader left them out, so they are
known before the first step) and images that could not be read when drawn (each replaced
by the next readable one). Both are counted once per file, whatever how often a file is
drawn, over all the images the training split lists.
"""

from __future__ import annotations

from collections.abc import Iterable

from dsod.data.base import DetectionDataset
from dsod.data.datasets import check_left_out
from dsod.engine import distributed as dist


class BadSamples:
    """The distinct unusable training images of a run (over all processes).

    Args:
        dataset: the training set; images its reader left out (``"error"`` problems) are
            counted from the start.
        limit: ``train.max_bad_sample_fraction``.
    """

    def __init__(self, dataset: DetectionDataset, limit: float) -> None:
        self.dataset = dataset
        self.left_out = dataset.left_out
        self.total = len(dataset) + len(self.left_out)
        self.limit = limit
        self.unreadable: set[int] = set()  # training-set indices
        self._new: list[int] = []

    @property
    def count(self) -> int:
        return len(self.left_out) + len(self.unreadable)

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else 0.0

    def describe(self) -> str:
        """``"6 of the 130 training samples (4.6%) could not be read"``."""
        return (
            f"{self.count} of the {self.total} training samples "
            f"({100 * self.fraction:.1f}%) could not be read"
        )

    def kinds(self) -> str:
        """``"1 annotation file(s) unusable, 5 image(s) unreadable"``."""
        return (
            f"{len(self.left_out)} annotation file(s) unusable, {len(self.unreadable)} "
            f"image(s) unreadable"
        )

    def check_annotations(self, source: str) -> None:
        """Before the first step: refuse a split whose unusable annotation files alone are
        over the limit (training would learn from the rest without saying so)."""
        check_left_out(
            self.dataset,
            self.limit,
            source,
            "Fix or remove them from the split list, or raise the limit",
        )

    def add(self, indices: Iterable[int]) -> None:
        """Record unreadable samples drawn by this process."""
        for index in indices:
            if index not in self.unreadable:
                self.unreadable.add(int(index))
                self._new.append(int(index))

    def new_count(self) -> int:
        """Unreadable files this process found since the last :meth:`share`."""
        return len(self._new)

    def share(self) -> None:
        """Union the processes' unreadable files (every process must call it together)."""
        for indices in dist.all_gather_objects(self._new):
            self.unreadable.update(indices)  # type: ignore[arg-type]
        self._new = []

    def over_limit(self) -> bool:
        return self.fraction > self.limit
