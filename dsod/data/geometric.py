"""SSD's geometric augmentation (Caffe SSD / DSOD ``AnnotatedDataLayer``): the crop window
samplers, and the crop, resize and flip of an image with its boxes.

Boxes come in absolute ``xyxy`` on the expanded canvas (continuous pixel coordinates, see
:mod:`dsod.structures`) and leave *normalised* ``xyxy`` in ``[0, 1]`` of the ``S x S`` output.

Crop, from 7 samplers: the whole image, one per ``crop_min_ious`` (IoU with *some* box at least
that) and one unconstrained; each tries 50 windows of side scale ``U(crop_scale)`` and aspect
``U(crop_aspect)`` clamped to ``[scale^2, 1/scale^2]`` (width ``scale * sqrt(ar)``, height
``scale / sqrt(ar)`` of the canvas) and keeps its first success; one of the samples found is
picked uniformly. Boxes whose centre lies in the window (edges included) are kept and clipped
to it. Deliberate deviation from the reference: the unconstrained sampler (Caffe:
``max_jaccard_overlap: 1.0``) also succeeds when the image has no boxes.

The expanded canvas is never built: only the image part of the window is resized, to its
footprint in the output rounded to whole pixels, and the rest of the output is filled with the
mean. Boxes go through that same rounded map, so they stay aligned with the pixels; the
footprint differs from the reference's by under half an output pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import cv2
import numpy as np

from dsod.box_ops import box_iou
from dsod.config import AugmentConfig

INTERPOLATIONS: tuple[int, ...] = (
    cv2.INTER_LINEAR,
    cv2.INTER_AREA,
    cv2.INTER_NEAREST,
    cv2.INTER_CUBIC,
    cv2.INTER_LANCZOS4,
)
CROP_TRIALS = 50  # per sampler, the reference's max_trials


def _round_div(num: int, den: int) -> int:
    """``round(num / den)`` (halves up) in integers, for ``den > 0``."""
    return (2 * num + den) // (2 * den)


def sample_crop(
    cfg: AugmentConfig, rng: np.random.Generator, width: int, height: int, boxes: np.ndarray
) -> tuple[int, int, int, int]:
    """A crop window ``(x0, y0, x1, y1)`` (integer pixels) of a ``width x height`` image
    with absolute ``xyxy`` ``boxes`` ``[N, 4]``, by SSD's batch samplers."""
    constraints: list[float | None] = [*cfg.crop_min_ious, None]
    n, t = len(constraints), CROP_TRIALS
    scale = rng.uniform(cfg.crop_scale[0], cfg.crop_scale[1], (n, t))
    aspect = np.clip(
        rng.uniform(cfg.crop_aspect[0], cfg.crop_aspect[1], (n, t)), scale**2, 1.0 / scale**2
    )
    bw, bh = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    x0 = rng.uniform(0.0, 1.0, (n, t)) * (1.0 - bw)
    y0 = rng.uniform(0.0, 1.0, (n, t)) * (1.0 - bh)
    # Integer offset and size, as the reference's CropImage.
    px0 = np.minimum((x0 * width).astype(np.int64), width - 1)
    py0 = np.minimum((y0 * height).astype(np.int64), height - 1)
    px1 = np.minimum(px0 + np.maximum((bw * width).astype(np.int64), 1), width)
    py1 = np.minimum(py0 + np.maximum((bh * height).astype(np.int64), 1), height)
    windows = np.stack([px0, py0, px1, py1], axis=-1)  # [n, t, 4]
    best = None
    if len(boxes):
        best = box_iou(windows.reshape(-1, 4).astype(np.float64), boxes.astype(np.float64))
        best = best.max(axis=1).reshape(n, t)  # each window's best IoU with a box
    candidates = [(0, 0, width, height)]
    for i, min_iou in enumerate(constraints):
        if min_iou is not None and best is None:
            continue
        hits = np.flatnonzero(best[i] >= min_iou) if min_iou is not None else [0]
        if len(hits):
            candidates.append(tuple(int(v) for v in windows[i, hits[0]]))
    return candidates[int(rng.integers(len(candidates)))]


class Warped(NamedTuple):
    """What :func:`crop_resize` made.

    Attributes:
        patch: BGR ``uint8 [S, S, 3]``.
        boxes: ``float64 [M, 4]`` normalised ``xyxy`` of the boxes kept.
        labels: their ``int64 [M]`` labels.
        part: ``(x0, y0, x1, y1)`` the image inside the window, in canvas pixels; None if the
            window misses the image.
        dest: ``(x0, y0, x1, y1)`` where ``part`` landed in ``patch``; None with ``part``.
    """

    patch: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    part: tuple[int, int, int, int] | None
    dest: tuple[int, int, int, int] | None


def crop_resize(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    offset: tuple[int, int],
    window: tuple[int, int, int, int],
    size: int,
    interpolation: int,
    fill: Sequence[int],
    paint: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Warped:
    """Crop ``window`` of the canvas on which BGR ``uint8 [H, W, 3]`` ``image`` lies at
    ``offset`` (the rest filled with ``fill``) and warp-resize it to ``size x size``.

    ``boxes`` ``[N, 4]`` are absolute ``xyxy`` on the canvas, with their ``labels`` ``[N]``;
    the boxes whose centre lies in the window are kept and clipped to the image in it.
    ``paint``, if given, is applied to the image pixels inside the window before resizing.
    """
    x0, y0, x1, y1 = window
    ox, oy = offset
    h, w = image.shape[:2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = (
        (centre[:, 0] >= x0) & (centre[:, 0] <= x1) & (centre[:, 1] >= y0) & (centre[:, 1] <= y1)
    )
    boxes, labels = boxes[keep], labels[keep]
    part = (max(x0, ox), max(y0, oy), min(x1, ox + w), min(y1, oy + h))
    if part[2] <= part[0] or part[3] <= part[1]:  # the window misses the image
        patch = np.empty((size, size, 3), dtype=np.uint8)
        patch[:, :] = fill
        return Warped(patch, np.zeros((0, 4)), labels[:0], None, None)
    dl = min(_round_div((part[0] - x0) * size, x1 - x0), size - 1)
    dt = min(_round_div((part[1] - y0) * size, y1 - y0), size - 1)
    dr = _round_div((part[2] - x0) * size, x1 - x0)
    db = _round_div((part[3] - y0) * size, y1 - y0)
    dr, db = min(max(dr, dl + 1), size), min(max(db, dt + 1), size)
    src = image[part[1] - oy : part[3] - oy, part[0] - ox : part[2] - ox]
    patch = cv2.resize(
        src if paint is None else paint(src), (dr - dl, db - dt), interpolation=interpolation
    )
    if (dl, dt, dr, db) != (0, 0, size, size):
        patch = cv2.copyMakeBorder(
            patch, dt, size - db, dl, size - dr, cv2.BORDER_CONSTANT, value=fill
        )
    lo = np.array(part[:2] * 2, dtype=np.float64)
    gain = np.array([(dr - dl) / (part[2] - part[0]), (db - dt) / (part[3] - part[1])] * 2)
    boxes = (np.clip(boxes, lo, part[2:] * 2) - lo) * gain + [dl, dt, dl, dt]
    return Warped(patch, np.clip(boxes / size, 0.0, 1.0), labels, part, (dl, dt, dr, db))


def hflip(patch: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror ``[H, W, C]`` ``patch`` and its normalised ``xyxy`` ``boxes`` ``[M, 4]``."""
    flipped = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
    return cv2.flip(patch, 1), flipped
