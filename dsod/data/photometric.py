"""SSD's photometric distortion (Caffe SSD / DSOD ``DistortImage``) of BGR ``uint8 [H, W, 3]``
images, drawn once as lookup tables and then applied to any pixels.

Brightness (additive delta in ``+-brightness_delta``), then either contrast, saturation, hue or
saturation, hue, contrast (p 0.5 each way); each step has p 0.5. Contrast multiplies pixel
values (``v * alpha``, not around the mean); saturation multiplies the 8-bit HSV ``S`` channel;
hue adds to the 8-bit ``H`` channel. Brightness and contrast are ``cv2.LUT`` tables composed
exactly like the reference's saturating ``uint8`` steps; saturation and hue share one HSV round
trip. The random channel swap is off in the reference's prototxt and left out.

Deliberate deviation from the reference: ``hue_delta`` is in OpenCV 8-bit hue units
(2 degrees) as in Caffe, so the default 18 is +-36 degrees; the hue wraps around the circle
(Caffe saturates negative shifts at 0).
"""

from __future__ import annotations

import cv2
import numpy as np

from dsod.config import AugmentConfig

#: ``(pre, hsv, post)``: ``pre`` and ``post`` ``uint8 [256]`` tables on BGR, ``hsv``
#: ``uint8 [256, 1, 3]`` on the 8-bit HSV image; None skips that step.
PhotometricPlan = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]

_IDENTITY = np.arange(256, dtype=np.float64)


def _affine_lut(alpha: float, beta: float) -> np.ndarray:
    """``uint8 [256]`` table of ``saturate(round(alpha * v + beta))``, as ``cv::convertTo``."""
    return np.clip(np.rint(_IDENTITY * alpha + beta), 0, 255).astype(np.uint8)


def _compose(first: np.ndarray | None, then: np.ndarray | None) -> np.ndarray | None:
    """The table applying ``first`` and then ``then``; None stands for the identity."""
    if first is None or then is None:
        return then if first is None else first
    return then[first]


def _skip_identity(lut: np.ndarray | None) -> np.ndarray | None:
    """None for a table that changes nothing."""
    return None if lut is None or np.array_equal(lut, _IDENTITY) else lut


def draw_photometric(cfg: AugmentConfig, rng: np.random.Generator) -> PhotometricPlan:
    """Draw one distortion from ``rng`` with the ranges of ``cfg``, for
    :func:`apply_photometric`."""
    contrast_first = rng.random() > 0.5

    def contrast() -> np.ndarray | None:
        if rng.random() < 0.5:
            return _affine_lut(rng.uniform(*cfg.contrast_range), 0.0)
        return None

    pre = None
    if rng.random() < 0.5:
        pre = _affine_lut(1.0, rng.uniform(-cfg.brightness_delta, cfg.brightness_delta))
    if contrast_first:
        pre = _compose(pre, contrast())
    sat = _affine_lut(rng.uniform(*cfg.saturation_range), 0.0) if rng.random() < 0.5 else None
    hue = int(np.rint(rng.uniform(-cfg.hue_delta, cfg.hue_delta))) if rng.random() < 0.5 else 0
    post = None if contrast_first else contrast()
    pre, sat, post = _skip_identity(pre), _skip_identity(sat), _skip_identity(post)
    hsv = None
    if sat is not None or hue % 180:  # a lossy HSV round trip only when it changes something
        hsv = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)
        hsv[:180, 0, 0] = np.mod(np.arange(180) + hue, 180)
        if sat is not None:
            hsv[:, 0, 1] = sat
    return pre, hsv, post


def apply_photometric(image: np.ndarray, plan: PhotometricPlan) -> np.ndarray:
    """Apply a :func:`draw_photometric` plan to BGR ``uint8 [H, W, 3]``; returns a new
    array, or ``image`` itself when the plan is empty (``image`` is never modified)."""
    pre, hsv, post = plan
    out = image if pre is None else cv2.LUT(image, pre)
    if hsv is not None:
        out = cv2.cvtColor(cv2.LUT(cv2.cvtColor(out, cv2.COLOR_BGR2HSV), hsv), cv2.COLOR_HSV2BGR)
    return out if post is None else cv2.LUT(out, post)
