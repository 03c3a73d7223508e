"""Prior sizes fitted to a data set's boxes, keeping the sources and priors per position.

The network's shapes depend only on how many priors each source has at a position, so a
fit may move every source's ``min_size``, ``max_size`` and aspect ratios but not their
number. It maximises the *coverage* of the training boxes as the network sees them
(warped to the ``S x S`` input): the fraction of boxes that have a prior with IoU at
least ``match_iou``, i.e. that the matcher makes a positive by IoU and not only by its
forced best match (:mod:`dsod.coverage` measures it exactly). A box's best IoU is taken
over the real prior grid: for one prior shape the best prior is the one whose centre is
nearest the box's centre on each axis (the overlaps in x and in y each shrink as the
centres move apart), so each box is scored against its nearest centre of every source
and shape.

What makes priors trainable was learnt on BCCD (blood cells at 300x300: 3,350 red cells
of 46-66 pixels, 292 platelets of 17-30, 301 white cells of 66-131; the small DSOD300 on
8,000 images; platelet AP after 2,400 images):

* **Coverage, not IoU.** Adding the mean best IoU to the objective (tighter priors)
  centred the priors on the commonest sizes, which gave each red cell 8-16 positives
  instead of the 6.9 that priors sized by hand give, and the platelets, outnumbered, were
  not learnt (AP 0.02, against 0.47 with the hand-sized priors). Among sizes that cover
  equally the search keeps the first it meets, the smallest: 6.8 positives per red cell.
* **SSD's scale ladder.** Each source's two squares lie between the previous source's
  ``max_size`` and the next one's ``min_size`` (``min_i < max_i <= min_{i+1}``), and
  ``max_i <= 1.6 min_i``, so each source answers for its own band of sizes; a fit without
  the ladder put a 40-pixel square on the finest source, which then matched red cells as
  well as platelets (AP 0.004). A source that moves past a neighbour pushes it along, so
  priors far from the data (another input size) still reach it.
* **Every class weighs the same**, however many boxes it has, so a rare class of small
  objects is not traded for a few more boxes of a common one.
* **Aspect ratios change only for a clear gain** (``RATIO_MIN_GAIN`` of the boxes).

On BCCD the fit gives ``min_sizes [18.7, 46.4, 111, ...]``, ``max_sizes [29.9, 74.3, 162,
...]``, close to the sizes chosen by hand (``[20, 45, 80, ...]``, ``[32, 70, 120, ...]``).

The search is coordinate ascent from the configured priors, sweeping the sources forward
and backward: for each source in turn, ``min_size`` on a log grid, then ``max_size /
min_size``, then the aspect ratios, each kept unless coverage gains more than
``MIN_GAIN``. Sources that no box needs keep their configured sizes. The result is a
function of the boxes and the settings only (no random sampling): the same data gives the
same priors, and 100,000 boxes take a few seconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsod.priors import PriorGenerator

MIN_GAIN = 1e-4
MAX_FIT_BOXES = 20000  # boxes the search scores (evenly spaced in data-set order)
SIZE_STEPS = 64  # candidate min sizes per source, log-spaced
MAX_OVER_MIN = (1.15, 1.3, 1.45, 1.6)
RATIO_CHOICES = (1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
SWEEPS = 4
RATIO_MIN_GAIN = 0.01  # of the (class-weighted) boxes


@dataclass(frozen=True)
class FittedPriors:
    """Per-source prior settings, in input pixels, as ``PriorConfig`` holds them."""

    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[tuple[float, ...], ...]
    objective: float  # the fitted priors' class-weighted coverage of the scored boxes
    start_objective: float  # the configured priors' on the same boxes
    num_boxes: int  # boxes the fit was given


def _source_shapes(min_size: float, max_size: float, ratios: Sequence[float]) -> np.ndarray:
    """``[k, 2]`` widths and heights of one source, in :class:`PriorGenerator`'s order."""
    shapes = [(min_size, min_size), (math.sqrt(min_size * max_size),) * 2]
    for ratio in ratios:
        root = math.sqrt(ratio)
        shapes += [(min_size * root, min_size / root), (min_size / root, min_size * root)]
    return np.asarray(shapes, dtype=np.float64)


def _nearest_centres(centres: np.ndarray, step: float, offset: float, size: int) -> np.ndarray:
    """The coordinate of the grid centre nearest each of ``centres`` (one axis)."""
    index = np.clip(np.rint(centres / step - offset), 0, size - 1)
    return (index + offset) * step


def _overlap(a_centre, a_size, b_centre, b_size) -> np.ndarray:
    """Length of the overlap of 1-D intervals given by centre and size (broadcasting)."""
    low = np.maximum(a_centre - a_size / 2, b_centre - b_size / 2)
    high = np.minimum(a_centre + a_size / 2, b_centre + b_size / 2)
    return np.maximum(high - low, 0.0)


class _GridScorer:
    """Best IoU of every box with one source's priors of given shapes, on its real grid."""

    def __init__(self, boxes: np.ndarray, step: float, offset: float, size: int) -> None:
        cx, cy = boxes[:, 0], boxes[:, 1]
        self.w, self.h = boxes[:, 2:3], boxes[:, 3:4]
        self.area = self.w * self.h
        self.px = _nearest_centres(cx, step, offset, size)[:, None]
        self.py = _nearest_centres(cy, step, offset, size)[:, None]
        self.cx, self.cy = cx[:, None], cy[:, None]

    def best_iou(self, shapes: np.ndarray) -> np.ndarray:
        """``[N]`` best IoU over ``shapes`` (``[k, 2]``), each at the nearest centre."""
        pw, ph = shapes[None, :, 0], shapes[None, :, 1]
        inter = _overlap(self.cx, self.w, self.px, pw) * _overlap(self.cy, self.h, self.py, ph)
        return (inter / (self.area + pw * ph - inter)).max(axis=1)


def _coverage(best: np.ndarray, match_iou: float, weights: np.ndarray | None) -> float:
    """The class-weighted fraction of boxes whose best IoU reaches ``match_iou``."""
    return float(np.average(best >= match_iou, weights=weights))


def fit_priors(
    boxes: np.ndarray,
    generator: PriorGenerator,
    match_iou: float = 0.5,
    labels: np.ndarray | None = None,
) -> FittedPriors:
    """Fit ``generator``'s per-source sizes and aspect ratios to ``boxes``.

    Args:
        boxes: ``[N, 4]`` ``(cx, cy, w, h)`` in pixels of the network input (the image
            warped to ``input_size x input_size``), ``N >= 1``.
        generator: the configured priors; its sources, grid steps, offset and number of
            aspect ratios per source are kept, and its sizes are where the search starts.
        match_iou: the matcher's positive threshold (``loss.match_iou``).
        labels: ``[N]`` class of each box: every class then weighs the same in the
            objective, however many boxes it has (None: one class).

    Returns:
        The fitted sizes and ratios (ratios sorted, sizes rounded to 0.1 pixel).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = (
        np.zeros(len(boxes), np.int64)
        if labels is None
        else np.asarray(labels, dtype=np.int64).reshape(-1)
    )
    keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    boxes, labels = boxes[keep], labels[keep]
    if boxes.shape[0] == 0:
        raise ValueError("fitting priors needs at least one box with a positive size")
    if boxes.shape[0] > MAX_FIT_BOXES:
        pick = np.linspace(0, boxes.shape[0] - 1, MAX_FIT_BOXES).round().astype(int)
        boxes, labels = boxes[pick], labels[pick]
    # Every class weighs the same, however many boxes it has.
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    n = len(generator.feature_sizes)
    scorers = [
        _GridScorer(boxes, generator.steps[i], generator.offset, generator.feature_sizes[i])
        for i in range(n)
    ]
    mins = [float(v) for v in generator.min_sizes]
    over = [min(float(generator.max_sizes[i]) / mins[i], MAX_OVER_MIN[-1]) for i in range(n)]
    ratios = [tuple(float(r) for r in generator.aspect_ratios[i]) for i in range(n)]

    def source_best(i: int, small: float, factor: float, rat: Sequence[float]) -> np.ndarray:
        return scorers[i].best_iou(_source_shapes(small, small * factor, rat))

    per_source = np.stack([source_best(i, mins[i], over[i], ratios[i]) for i in range(n)])
    start = _coverage(per_source.max(0), match_iou, weights)
    size_grid = np.geomspace(4.0, generator.input_size * 1.1, SIZE_STEPS)

    def ladder(i: int, small: float, factor: float) -> tuple[list[float], list[float]]:
        """Sizes with source ``i`` at ``(small, factor)`` and its neighbours pushed along
        where they would break the ladder (upward: a source starts where the one below
        ends; downward: a source ends where the one above starts)."""
        new_mins, new_over = list(mins), list(over)
        new_mins[i], new_over[i] = small, factor
        for j in range(i + 1, n):
            new_mins[j] = max(new_mins[j], new_mins[j - 1] * new_over[j - 1])
        for j in range(i - 1, -1, -1):
            new_mins[j] = min(new_mins[j], new_mins[j + 1] / new_over[j])
        return new_mins, new_over

    for sweep in range(SWEEPS):
        changed = False
        # forward, then backward: a source can then follow its neighbour both ways
        for i in range(n) if sweep % 2 == 0 else reversed(range(n)):
            others = np.delete(per_source, i, axis=0).max(0) if n > 1 else np.zeros(len(boxes))

            def score(
                small: float, factor: float, rat: Sequence[float]
            ) -> tuple[float, list[float], list[float], dict[int, np.ndarray]]:
                """Coverage with source ``i`` at these settings, the ladder that follows,
                and the best-IoU rows of the sources that changed."""
                new_mins, new_over = ladder(i, small, factor)
                rows = {i: source_best(i, small, factor, rat)}
                for j in range(n):
                    if j != i and (new_mins[j], new_over[j]) != (mins[j], over[j]):
                        rows[j] = source_best(j, new_mins[j], new_over[j], ratios[j])
                if len(rows) == 1:  # the common case: only source i changes
                    best = np.maximum(others, rows[i])
                else:
                    best = np.stack([rows.get(j, per_source[j]) for j in range(n)]).max(0)
                return _coverage(best, match_iou, weights), new_mins, new_over, rows

            current = score(mins[i], over[i], ratios[i])[0]
            # Within the ladder's bounds on the fine grid; past them (pushing neighbours
            # along, dearer to score) on every fourth size.
            low = mins[i - 1] * over[i - 1] if i > 0 else 0.0
            high = mins[i + 1] if i + 1 < n else math.inf
            options = [
                ("min", v)
                for k, v in enumerate(size_grid)
                if low <= v <= high / over[i] or k % 4 == 0
            ]
            options += [("over", f) for f in MAX_OVER_MIN]
            options += [
                ("ratios", r) for r in itertools.combinations(RATIO_CHOICES, len(ratios[i]))
            ]
            for kind, value in options:
                rat = value if kind == "ratios" else ratios[i]
                result, new_mins, new_over, rows = score(
                    value if kind == "min" else mins[i], value if kind == "over" else over[i], rat
                )
                # Other aspect ratios only for a clear gain: a network's ratios are a
                # choice of shape, not to be traded for a box or two.
                if result <= current + (RATIO_MIN_GAIN if kind == "ratios" else MIN_GAIN):
                    continue
                per_source = per_source.copy()
                for j, row in rows.items():
                    per_source[j] = row
                others = np.delete(per_source, i, axis=0).max(0) if n > 1 else others
                current = result
                mins, over = [float(v) for v in new_mins], [float(v) for v in new_over]
                ratios[i] = tuple(float(r) for r in rat)
                changed = True
        if not changed:
            break

    final = _coverage(per_source.max(0), match_iou, weights)
    return FittedPriors(
        min_sizes=tuple(round(m, 1) for m in mins),
        max_sizes=tuple(round(m * f, 1) for m, f in zip(mins, over)),
        aspect_ratios=tuple(tuple(sorted(r)) for r in ratios),
        objective=final,
        start_objective=start,
        num_boxes=int(boxes.shape[0]),
    )
