"""The two records that cross module boundaries: a ground-truth annotation and detections.

Box convention outside the model: absolute ``xyxy`` in continuous pixel coordinates of the
original image, ``0 <= x1 < x2 <= width``. A VOC XML box ``(xmin, ymin, xmax, ymax)`` in the
devkit's 1-based inclusive pixels is ``(xmin - 1, ymin - 1, xmax, ymax)`` here, so a box's
width here equals the devkit's ``xmax - xmin + 1``.

Labels: ``0`` is background; object classes are ``1..C`` in the order of the config's
``data.class_names``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


@dataclass
class Annotation:
    """The ground truth of one image.

    Attributes:
        image_id: VOC: the file stem (``000001``); COCO: the image id as a string.
        image_path: path of the image file.
        width, height: image size in pixels, as the annotation states it.
        boxes: float32 ``[N, 4]`` absolute ``xyxy`` (see module docstring).
        labels: int64 ``[N]`` in ``1..C``.
        difficult: bool ``[N]``: VOC "difficult" or COCO "iscrowd"; such boxes neither
            count nor penalise in scoring.
    """

    image_id: str
    image_path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=_empty_boxes)
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    difficult: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=bool))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass
class Detections:
    """Detections of one image.

    Attributes:
        boxes: float32 ``[K, 4]`` absolute ``xyxy`` in the original image's pixels.
        scores: float32 ``[K]`` class confidences in ``[0, 1]``.
        labels: int64 ``[K]`` in ``1..C``.
    """

    boxes: np.ndarray = field(default_factory=_empty_boxes)
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])
