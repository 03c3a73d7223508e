"""Default boxes ("priors"), generated as Caffe SSD's PriorBox layer does.

Per feature-map position, in this order: one square prior of side ``min_size``, one
square of side ``sqrt(min_size * max_size)``, then for every aspect ratio ``a`` a prior
``min_size * sqrt(a)`` wide and ``min_size / sqrt(a)`` high and (with flips) its transpose.
So a source with ratios ``[2, 3]`` has 6 priors per position, one with ``[2]`` has 4.

QUIRK of the reference, kept by default: the steps are given, not derived, and the last
one (300 for a 2x2 map at 300x300) puts the centres of that map at 0.5 and 1.5 image
sides, so three of its four positions lie outside the image. ``steps=None`` derives every
step as ``input_size / feature_size`` instead, which is the obvious fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def priors_per_location(
    aspect_ratios: Sequence[float], flip: bool = True, has_max_size: bool = True
) -> int:
    """Number of priors at one position: 1 (+1 with a max size) + 1 or 2 per ratio."""
    return 1 + int(has_max_size) + len(aspect_ratios) * (2 if flip else 1)


class PriorGenerator:
    """Builds all priors of a detector, normalised ``cxcywh`` in ``[0, 1]`` image units.

    Args:
        input_size: side of the square network input in pixels.
        feature_sizes: side of each source's (square) feature map, First first.
        min_sizes, max_sizes: prior sizes per source in input pixels.
        aspect_ratios: extra ratios per source (besides 1), e.g. ``[[2], [2, 3], ...]``.
        steps: pixel distance between neighbouring centres per source; ``None`` derives
            ``input_size / feature_size`` (see the module docstring for the QUIRK).
        offset: centre offset within a cell, in cells.
        clip: clamp the ``cxcywh`` values to ``[0, 1]`` (the reference does not).
        flip: add ``1 / a`` for every ratio ``a``.
    """

    def __init__(
        self,
        input_size: int,
        feature_sizes: Sequence[int],
        min_sizes: Sequence[float],
        max_sizes: Sequence[float],
        aspect_ratios: Sequence[Sequence[float]],
        steps: Sequence[float] | None = None,
        offset: float = 0.5,
        clip: bool = False,
        flip: bool = True,
    ) -> None:
        n = len(feature_sizes)
        if not (len(min_sizes) == len(max_sizes) == len(aspect_ratios) == n):
            raise ValueError(
                f"priors need one min size, max size and ratio list per source "
                f"({n} sources): got {len(min_sizes)}, {len(max_sizes)}, "
                f"{len(aspect_ratios)}"
            )
        if steps is not None and len(steps) != n:
            raise ValueError(f"priors need one step per source ({n}), got {len(steps)}")
        self.input_size = input_size
        self.feature_sizes = tuple(int(s) for s in feature_sizes)
        self.min_sizes = tuple(min_sizes)
        self.max_sizes = tuple(max_sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self.steps = (
            tuple(steps)
            if steps is not None
            else tuple(input_size / size for size in self.feature_sizes)
        )
        self.offset = offset
        self.clip = clip
        self.flip = flip

    @property
    def priors_per_location(self) -> list[int]:
        """Priors per position for each source (4, 6, 6, 6, 4, 4 for DSOD300)."""
        return [priors_per_location(r, self.flip) for r in self.aspect_ratios]

    @property
    def num_priors(self) -> int:
        """Total number of priors (8,744 for DSOD300 on VOC)."""
        return sum(k * s * s for k, s in zip(self.priors_per_location, self.feature_sizes))

    def _shapes(self, index: int) -> torch.Tensor:
        """``[k, 2]`` prior widths and heights of source ``index`` in input pixels."""
        small, large = self.min_sizes[index], self.max_sizes[index]
        shapes = [(small, small), (math.sqrt(small * large),) * 2]
        for ratio in self.aspect_ratios[index]:
            root = math.sqrt(ratio)
            shapes.append((small * root, small / root))
            if self.flip:
                shapes.append((small / root, small * root))
        return torch.tensor(shapes, dtype=torch.float64)

    def __call__(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """All priors as ``[P, 4]`` normalised ``(cx, cy, w, h)``, sources in order, then
        rows, then columns, then the shapes of a position."""
        per_source = []
        for index, size in enumerate(self.feature_sizes):
            step = self.steps[index]
            centres = (torch.arange(size, dtype=torch.float64) + self.offset) * step
            cy, cx = torch.meshgrid(centres, centres, indexing="ij")
            shapes = self._shapes(index)  # [k, 2]
            k = shapes.shape[0]
            centre = torch.stack([cx, cy], -1).reshape(-1, 1, 2).expand(-1, k, 2)
            wh = shapes.reshape(1, k, 2).expand(centre.shape[0], k, 2)
            per_source.append(torch.cat([centre, wh], -1).reshape(-1, 4))
        priors = torch.cat(per_source) / self.input_size
        if self.clip:
            priors = priors.clamp(0.0, 1.0)
        return priors.to(dtype=dtype, device=device)
