"""Drawing detections on images with OpenCV: a box per detection in a colour of its class,
and a filled label with the class name and score."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dsod.structures import Detections

if TYPE_CHECKING:
    from dsod.inference import DetectionResult

__all__ = ["class_colour", "draw_detections"]

_GOLDEN = 0.618033988749895


def class_colour(label: int) -> tuple[int, int, int]:
    """A BGR colour for class ``label``: hues spread by the golden ratio, so neighbouring
    labels differ clearly; the same label always gets the same colour."""
    hue = (0.12 + int(label) * _GOLDEN) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(blue * 255), int(green * 255), int(red * 255)


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on a BGR ``background``."""
    blue, green, red = background
    luminance = 0.299 * red + 0.587 * green + 0.114 * blue
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


def draw_detections(
    image: np.ndarray,
    result: Detections | DetectionResult,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.0,
    thickness: int | None = None,
    font_scale: float | None = None,
    copy: bool = True,
) -> np.ndarray:
    """Draw boxes, class names and scores on a BGR image.

    Args:
        image: uint8 BGR ``[H, W, 3]``; the boxes are in its pixels.
        result: a :class:`dsod.inference.DetectionResult` (its per-detection
            ``class_names`` are used) or a :class:`~dsod.structures.Detections`: boxes float
            ``[K, 4]`` absolute ``xyxy``, scores ``[K]``, labels ``[K]`` in ``1..C``.
        class_names: the ``C`` class names, for a ``Detections`` record (label ``l`` is
            ``class_names[l - 1]``); without them the label number is written.
        score_threshold: detections below it are not drawn.
        thickness: box line width in pixels; default scales with the image size.
        font_scale: OpenCV font scale; default scales with the image size.
        copy: draw on a copy (default) instead of on ``image`` itself.

    Returns:
        The annotated uint8 BGR ``[H, W, 3]`` image.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 BGR image [H, W, 3], got {image.dtype} {image.shape}")
    canvas = image.copy() if copy else image
    height, width = canvas.shape[:2]
    side = min(height, width)
    thickness = thickness or max(1, round(side / 320))
    font_scale = font_scale or float(np.clip(side / 900, 0.35, 1.2))
    text_thickness = max(1, round(font_scale * 1.5))

    boxes = np.asarray(result.boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(result.scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(result.labels, dtype=np.int64).reshape(-1)
    names = getattr(result, "class_names", None)
    if names is None or len(names) != len(labels):
        names = [
            class_names[lab - 1]
            if class_names is not None and 0 < lab <= len(class_names)
            else str(lab)
            for lab in labels.tolist()
        ]

    # Lowest score first, so the most confident boxes and labels end up on top.
    for i in np.argsort(scores, kind="stable"):
        if scores[i] < score_threshold:
            continue
        colour = class_colour(int(labels[i]))
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        x1, x2 = max(0, min(x1, width - 1)), max(0, min(x2, width - 1))
        y1, y2 = max(0, min(y1, height - 1)), max(0, min(y2, height - 1))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_8)

        text = f"{names[i]} {scores[i]:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_thickness
        )
        pad = max(1, text_h // 4)
        label_h = text_h + baseline + 2 * pad
        top = y1 - label_h if y1 - label_h >= 0 else y1  # above the box, else inside it
        left = min(x1, max(0, width - text_w - 2 * pad))
        cv2.rectangle(
            canvas, (left, top), (left + text_w + 2 * pad, top + label_h), colour, cv2.FILLED
        )
        cv2.putText(
            canvas,
            text,
            (left + pad, top + pad + text_h),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            _text_colour(colour),
            text_thickness,
            cv2.LINE_AA,
        )
    return canvas
