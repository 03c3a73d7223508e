"""SSD's training augmentation (Caffe SSD / DSOD ``AnnotatedDataLayer``): :class:`TrainTransform`,
which draws every random choice and runs the steps in the reference's order.

Images are BGR ``uint8 [H, W, 3]`` (OpenCV order). Input boxes are absolute ``xyxy`` in
continuous pixel coordinates (see :mod:`dsod.structures`); output boxes are *normalised*
``xyxy`` in ``[0, 1]`` of the network input. Output images are ``float32 [3, S, S]``, minus the
mean BGR, not scaled. Test-time preprocessing is :mod:`dsod.data.preprocess`.

Training follows the reference's order, after the user's own ``augment.extra``
albumentations transforms, if any (:mod:`dsod.data.extra_augment`):

1. photometric distortion of brightness, contrast, saturation and hue
   (:mod:`dsod.data.photometric`).
2. expand (zoom out) with ``expand_prob`` onto a canvas ``U(1, expand_max_ratio)`` times larger,
   filled with the mean BGR (rounded to ``uint8``).
3. crop, from 7 samplers: the whole image, one per ``crop_min_ious`` and one unconstrained
   (:mod:`dsod.data.geometric`).
4. warp-resize to ``S x S`` with an interpolation drawn from LINEAR, AREA, NEAREST, CUBIC,
   LANCZOS4; horizontal flip with ``flip_prob``; ``float32`` minus the mean; ``CHW``.

Speed: the photometric steps are pointwise, so they run on the image pixels inside the crop
window only (exactly the same result); the canvas is never built (see
:mod:`dsod.data.geometric`).

Why not albumentations: ``HueSaturationValue`` shifts saturation additively (SSD scales it) and
assumes RGB; ``RandomBrightnessContrast`` computes ``alpha * v + beta`` in one step with one
probability (SSD: ``v + delta`` saturated, then ``* alpha``, each with its own p). Flip and
resize are single OpenCV calls, cheaper than a bbox-aware ``Compose``.

Deliberate deviation from the reference (the others are in the step modules): boxes narrower
or lower than ``min_box_pixels`` output pixels (default 1, i.e. ``1/S`` normalised) are
dropped with their labels; Caffe keeps any positive size.

:func:`normalize_to_chw`, :func:`image_to_tensor`, :class:`TestTransform`,
``INTERPOLATIONS`` and ``CROP_TRIALS`` are re-exported here from the step modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dsod.config import AugmentConfig
from dsod.data.extra_augment import ExtraAugment
from dsod.data.geometric import CROP_TRIALS, INTERPOLATIONS, crop_resize, hflip, sample_crop
from dsod.data.photometric import PhotometricPlan, apply_photometric, draw_photometric
from dsod.data.preprocess import TestTransform, image_to_tensor, normalize_to_chw

__all__ = [
    "AugmentRecord",
    "CROP_TRIALS",
    "INTERPOLATIONS",
    "TestTransform",
    "TrainTransform",
    "image_to_tensor",
    "normalize_to_chw",
]


def _worker_seed() -> int | None:
    """The DataLoader worker's seed in a worker process, else None."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return None if info is None else int(info.seed)


@dataclass
class AugmentRecord:
    """What the last :class:`TrainTransform` call did, for tests and debugging.

    Attributes:
        canvas: ``(w, h)`` after expand (the image size when not expanded).
        offset: ``(x, y)`` of the image's top-left corner on the canvas.
        crop: ``(x0, y0, x1, y1)`` integer window of the canvas.
        part: ``(x0, y0, x1, y1)`` the image inside the window, in canvas pixels; None if the
            window misses the image.
        dest: ``(x0, y0, x1, y1)`` where ``part`` lands in the output, in output pixels,
            before the flip; None with ``part``.
        flip: mirrored horizontally after resizing.
        interpolation: the ``cv2.INTER_*`` flag of the resize.
    """

    canvas: tuple[int, int]
    offset: tuple[int, int]
    crop: tuple[int, int, int, int]
    part: tuple[int, int, int, int] | None
    dest: tuple[int, int, int, int] | None
    flip: bool
    interpolation: int


class TrainTransform:
    """SSD's training augmentation (see the module docstring), with its own generator.

    Randomness comes only from ``self.rng`` (``rng``, else ``np.random.default_rng(seed)``).
    Inside a DataLoader worker the generator is reseeded once per worker process from
    ``(seed, worker_info.seed)``, so workers and epochs (non-persistent workers) differ, yet a
    run is reproducible given ``torch.manual_seed``. :meth:`set_seed` reseeds explicitly.
    ``self.last`` is the :class:`AugmentRecord` of the last call.

    Raises:
        ConfigError: an ``augment.extra`` entry cannot be built
            (:class:`~dsod.data.extra_augment.ExtraAugment`).
    """

    def __init__(
        self,
        size: int,
        cfg: AugmentConfig,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
        min_box_pixels: float = 1.0,
    ) -> None:
        if cfg.expand_max_ratio is None:
            raise ValueError(
                "augment.expand_max_ratio is null: it is fitted to the boxes when "
                "a run reads its training data (dsod.engine.from_data)"
            )
        self.size = int(size)
        self.cfg = cfg
        self.min_box_pixels = float(min_box_pixels)
        self._mean = np.asarray(cfg.mean_bgr, dtype=np.float32)
        self._fill = tuple(int(v) for v in np.clip(np.rint(self._mean), 0, 255))
        self._seed = 0 if seed is None else int(seed)
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self._worker_seed: int | None = None
        self.last: AugmentRecord | None = None
        self.extra = ExtraAugment(cfg.extra) if cfg.extra else None

    def set_seed(self, seed: int) -> None:
        """Restart the generator from ``seed`` (inside a worker too: then no automatic
        reseeding happens in that worker)."""
        self._seed = int(seed)
        self.rng = np.random.default_rng(seed)
        self._worker_seed = _worker_seed()

    def _maybe_reseed_for_worker(self) -> None:
        seed = _worker_seed()
        if seed is not None and seed != self._worker_seed:
            self._worker_seed = seed
            self.rng = np.random.default_rng([self._seed, seed])

    def draw_photometric(self) -> PhotometricPlan:
        """Draw one distortion: ``(pre, hsv, post)`` tables (None: skip), for
        :meth:`apply_photometric`: ``pre`` and ``post`` ``uint8 [256]`` on BGR, ``hsv``
        ``uint8 [256, 1, 3]`` on the 8-bit HSV image."""
        return draw_photometric(self.cfg, self.rng)

    @staticmethod
    def apply_photometric(image: np.ndarray, plan: PhotometricPlan) -> np.ndarray:
        """Apply a :meth:`draw_photometric` plan to BGR ``uint8 [H, W, 3]``; returns a new
        array, or ``image`` itself when the plan is empty (``image`` is never modified)."""
        return apply_photometric(image, plan)

    def photometric(self, image: np.ndarray) -> np.ndarray:
        """Random brightness, contrast, saturation and hue of BGR ``uint8 [H, W, 3]``."""
        return self.apply_photometric(image, self.draw_photometric())

    def sample_crop(self, width: int, height: int, boxes: np.ndarray) -> tuple[int, int, int, int]:
        """A crop window ``(x0, y0, x1, y1)`` (integer pixels) of a ``width x height`` image
        with absolute ``xyxy`` ``boxes`` ``[N, 4]``, by SSD's batch samplers."""
        return sample_crop(self.cfg, self.rng, width, height, boxes)

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment one sample.

        Args:
            image: BGR ``uint8 [H, W, 3]``.
            boxes: ``float32 [N, 4]`` absolute ``xyxy``; clipped to the image first.
            labels: ``int64 [N]``.

        Returns:
            ``float32 [3, S, S]`` image minus the mean; ``float32 [M, 4]`` normalised ``xyxy``
            boxes, ``0 <= x1 < x2 <= 1`` and ``0 <= y1 < y2 <= 1``; their ``int64 [M]`` labels.
        """
        self._maybe_reseed_for_worker()
        cfg, rng, size = self.cfg, self.rng, self.size
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected a BGR uint8 [H, W, 3] image, got {image.dtype} {image.shape}"
            )
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(boxes) != len(labels):
            raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
        boxes = np.clip(boxes, 0, [w, h, w, h])
        if self.extra is not None:  # augment.extra, on the original image
            image, boxes, labels = self.extra(image, boxes, labels, int(rng.integers(2**31)))
            h, w = image.shape[:2]
        plan = self.draw_photometric() if cfg.photometric else (None, None, None)

        cw, ch, ox, oy = w, h, 0, 0
        if cfg.expand_prob > 0 and rng.random() < cfg.expand_prob:
            ratio = rng.uniform(1.0, cfg.expand_max_ratio)
            cw, ch = int(w * ratio), int(h * ratio)
            ox, oy = int(rng.uniform(0, cw - w)), int(rng.uniform(0, ch - h))
            boxes = boxes + [ox, oy, ox, oy]
        x0, y0, x1, y1 = self.sample_crop(cw, ch, boxes) if cfg.crop else (0, 0, cw, ch)
        interpolation = cv2.INTER_LINEAR
        if cfg.random_interpolation:
            interpolation = INTERPOLATIONS[int(rng.integers(len(INTERPOLATIONS)))]
        flip = cfg.flip_prob > 0 and rng.random() < cfg.flip_prob

        patch, boxes, labels, part, dest = crop_resize(
            image,
            boxes,
            labels,
            (ox, oy),
            (x0, y0, x1, y1),
            size,
            interpolation,
            self._fill,
            lambda pixels: self.apply_photometric(pixels, plan),
        )
        if flip:
            patch, boxes = hflip(patch, boxes)

        boxes = boxes.astype(np.float32).reshape(-1, 4)
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        min_side = self.min_box_pixels / size - 1e-6  # float32 slack
        big = (bw >= min_side) & (bh >= min_side) & (bw > 0) & (bh > 0)
        self.last = AugmentRecord(
            (cw, ch), (ox, oy), (x0, y0, x1, y1), part, dest, flip, interpolation
        )
        return normalize_to_chw(patch, self._mean), boxes[big], labels[big]
