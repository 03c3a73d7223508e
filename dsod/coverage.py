"""How well a set of priors covers a data set's boxes, as the matcher sees them.

A ground-truth box is *covered* when at least one prior is a real positive for it: a prior
whose IoU with the box is at least ``match_iou`` and that the box wins (no other box of the
image overlaps that prior more), as :mod:`dsod.matching` assigns them. The one prior the
matcher forces on every box does not count: a box covered only by it trains on a single,
poorly overlapping prior. *Positives per box* is the mean number of such priors.

Boxes are measured in the network input's pixels (the image warped to ``S x S``), grouped
by class and by size band of ``sqrt(w * h)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torchvision.ops import box_convert

from dsod.box_ops import box_iou

SIZE_BANDS: tuple[float, ...] = (16, 32, 64, 128, 256)
"""Edges of the size bands, in input pixels of ``sqrt(w * h)``."""

LOW_COVERAGE = 0.8
"""Below this fraction of covered boxes, training warns and names the fix."""


@dataclass
class CoverageGroup:
    """Coverage of one group of boxes."""

    boxes: int = 0
    covered: int = 0
    positives: int = 0

    @property
    def fraction(self) -> float:
        return self.covered / self.boxes if self.boxes else float("nan")

    @property
    def positives_per_box(self) -> float:
        return self.positives / self.boxes if self.boxes else float("nan")

    def add(self, covered: np.ndarray, positives: np.ndarray) -> None:
        self.boxes += int(covered.size)
        self.covered += int(covered.sum())
        self.positives += int(positives.sum())


@dataclass
class Coverage:
    """Coverage overall, per class name and per size band (``"<16"``, ``"16-32"``, ...)."""

    match_iou: float
    overall: CoverageGroup = field(default_factory=CoverageGroup)
    per_class: dict[str, CoverageGroup] = field(default_factory=dict)
    per_band: dict[str, CoverageGroup] = field(default_factory=dict)


def band_names(edges: Sequence[float] = SIZE_BANDS) -> list[str]:
    """``["<16", "16-32", ..., ">=256"]`` for the band edges."""
    names = [f"<{edges[0]:g}"]
    names += [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])]
    return names + [f">={edges[-1]:g}"]


def real_positives(
    boxes: np.ndarray, priors_xyxy: np.ndarray, prior_areas: np.ndarray, match_iou: float
) -> np.ndarray:
    """Real positives of each box of one image.

    Args:
        boxes: ``[N, 4]`` normalised ``xyxy``.
        priors_xyxy, prior_areas: ``[P, 4]`` normalised ``xyxy`` priors and their areas.
        match_iou: the positive threshold.

    Returns:
        int64 ``[N]``: for each box, the priors it wins with IoU ``>= match_iou``.
    """
    if boxes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    iou = box_iou(boxes.astype(np.float32), priors_xyxy, prior_areas)
    winner = iou.argmax(0)
    won = iou[winner, np.arange(iou.shape[1])] >= match_iou
    return np.bincount(winner[won], minlength=boxes.shape[0]).astype(np.int64)


def prior_coverage(
    images: Iterable[tuple[np.ndarray, np.ndarray]],
    priors: torch.Tensor,
    class_names: Sequence[str],
    input_size: int,
    match_iou: float = 0.5,
) -> Coverage:
    """Measure how ``priors`` cover the boxes of ``images``.

    Args:
        images: per image, ``(boxes [N, 4] normalised xyxy, labels [N] in 1..C)``.
        priors: ``[P, 4]`` normalised ``cxcywh``.
        class_names: label ``l`` is ``class_names[l - 1]``.
        input_size: the network input side, for the size bands.
        match_iou: the matcher's positive threshold (``loss.match_iou``).
    """
    priors_xyxy = np.asfortranarray(box_convert(priors.double(), "cxcywh", "xyxy").float().numpy())
    areas = (priors[:, 2] * priors[:, 3]).float().numpy()
    names = band_names()
    result = Coverage(
        match_iou,
        per_class={n: CoverageGroup() for n in class_names},
        per_band={n: CoverageGroup() for n in names},
    )
    for boxes, labels in images:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        positives = real_positives(boxes, priors_xyxy, areas, match_iou)
        covered = positives > 0
        result.overall.add(covered, positives)
        labels = np.asarray(labels, dtype=np.int64)
        side = (
            np.sqrt(np.clip((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 0, None))
            * input_size
        )
        band = np.searchsorted(np.asarray(SIZE_BANDS), side, side="right")
        for index, name in enumerate(class_names, start=1):
            keep = labels == index
            if keep.any():
                result.per_class[name].add(covered[keep], positives[keep])
        for index, name in enumerate(names):
            keep = band == index
            if keep.any():
                result.per_band[name].add(covered[keep], positives[keep])
    return result


def coverage_lines(coverage: Coverage) -> list[str]:
    """A short table: overall, then per class and per size band (bands with boxes only)."""

    def line(name: str, g: CoverageGroup) -> str:
        return f"  {name:<16} {g.boxes:>7}  {100 * g.fraction:6.1f}%  {g.positives_per_box:6.2f}"

    lines = [
        f"prior coverage (a prior at IoU >= {coverage.match_iou:g} that the box wins, "
        f"the forced best match not counted):",
        f"  {'':<16} {'boxes':>7}  {'covered':>7}  {'pos/box':>6}",
        line("all", coverage.overall),
    ]
    lines += [line(name, g) for name, g in coverage.per_class.items() if g.boxes]
    lines += [line(f"size {name} px", g) for name, g in coverage.per_band.items() if g.boxes]
    return lines
