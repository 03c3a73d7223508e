"""Test-time preprocessing: a BGR ``uint8 [H, W, 3]`` image to the network input, a linear
warp-resize to ``S x S`` and ``float32 [3, S, S]`` minus the mean BGR, not scaled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch


def normalize_to_chw(image: np.ndarray, mean_bgr: Sequence[float]) -> np.ndarray:
    """BGR ``uint8 [H, W, 3]`` to ``float32 [3, H, W]`` minus ``mean_bgr``."""
    planar = np.ascontiguousarray(image.transpose(2, 0, 1))
    return np.subtract(
        planar, np.asarray(mean_bgr, dtype=np.float32)[:, None, None], dtype=np.float32
    )


def image_to_tensor(
    image: np.ndarray, size: int, mean_bgr: Sequence[float] = (104.0, 117.0, 123.0)
) -> torch.Tensor:
    """One BGR ``uint8 [H, W, 3]`` image to the network input: ``torch.float32 [3, S, S]``
    (linear warp-resize, minus the mean), as :class:`TestTransform`."""
    import torch

    return torch.from_numpy(TestTransform(size, mean_bgr)(image)[0])


class TestTransform:
    """Test-time preprocessing: linear warp-resize to ``size x size``, minus the mean."""

    __test__ = False  # not a pytest class

    def __init__(self, size: int, mean_bgr: Sequence[float] = (104.0, 117.0, 123.0)) -> None:
        self.size = int(size)
        self.mean_bgr = tuple(float(v) for v in mean_bgr)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray | None = None, labels: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """BGR ``uint8 [H, W, 3]`` to ``float32 [3, S, S]``; ``boxes`` and ``labels`` come
        back unchanged, whatever their format."""
        resized = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return normalize_to_chw(resized, self.mean_bgr), boxes, labels
