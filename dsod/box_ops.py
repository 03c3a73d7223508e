"""Box arithmetic on numpy arrays: the IoU matrix of two sets of ``xyxy`` boxes.

:func:`box_iou` is the package's one IoU matrix on numpy boxes (the crop samplers of
:mod:`dsod.data.geometric`, the prior coverage of :mod:`dsod.coverage`). It is oriented as
``torchvision.ops.box_iou``: ``[N, 4] x [M, 4] -> [N, M]``. The matcher
(:mod:`dsod.matching`) keeps a private variant with the same arithmetic, laid out for its
hot path in the loader workers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_iou"]


def box_iou(
    boxes1: np.ndarray, boxes2: np.ndarray, areas2: np.ndarray | None = None
) -> np.ndarray:
    """The IoU of every box of ``boxes1`` with every box of ``boxes2``.

    Args:
        boxes1: ``[N, 4]`` ``xyxy``: absolute pixels (:mod:`dsod.structures`), or normalised
            to the input as priors are; both sets in the same units.
        boxes2: ``[M, 4]`` ``xyxy`` in those units.
        areas2: ``[M]`` the areas of ``boxes2`` where the caller holds them exactly (priors:
            width times height of their ``cxcywh`` form); by default computed from the
            corners.

    Returns:
        ``[N, M]`` IoU in the dtype of the inputs, ``[i, j]`` for ``boxes1[i]`` and
        ``boxes2[j]``. Unions are floored at ``1e-12``, so two empty boxes give 0.
    """
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    areas1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    if areas2 is None:
        areas2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return inter / np.maximum(areas1[:, None] + areas2[None, :] - inter, 1e-12)
