"""SSD's training augmentation (Caffe SSD / DSOD ``AnnotatedDataLayer``) and test preprocessing.

Images are BGR ``uint8 [H, W, 3]`` (OpenCV order). Input boxes are absolute ``xyxy`` in
continuous pixel coordinates (see :mod:`dsod.structures`); output boxes are *normalised*
``xyxy`` in ``[0, 1]`` of the network input. Output images are ``float32 [3, S, S]``, minus the
mean BGR, not scaled.

Training follows the reference's order, after the user's own ``augment.extra``
albumentations transforms, if any (:mod:`dsod.data.extra_augment`):

1. photometric distortion: brightness (additive delta in ``+-brightness_delta``), then either
   contrast, saturation, hue or saturation, hue, contrast (p 0.5 each way); each step has p 0.5.
   Contrast multiplies pixel values (``v * alpha``, not around the mean); saturation multiplies
   the 8-bit HSV ``S`` channel; hue adds to the 8-bit ``H`` channel. Brightness and contrast are
   ``cv2.LUT`` tables composed exactly like the reference's saturating ``uint8`` steps;
   saturation and hue share one HSV round trip. The random channel swap is off in the
   reference's prototxt and left out.
2. expand (zoom out) with ``expand_prob`` onto a canvas ``U(1, expand_max_ratio)`` times larger,
   filled with the mean BGR (rounded to ``uint8``).
3. crop, from 7 samplers: the whole image, one per ``crop_min_ious`` (IoU with *some* box at
   least that) and one unconstrained; each tries 50 windows of side scale ``U(crop_scale)`` and
   aspect ``U(crop_aspect)`` clamped to ``[scale^2, 1/scale^2]`` (width ``scale * sqrt(ar)``,
   height ``scale / sqrt(ar)`` of the canvas) and keeps its first success; one of the samples
   found is picked uniformly. Boxes whose centre lies in the window (edges included) are kept
   and clipped to it.
4. warp-resize to ``S x S`` with an interpolation drawn from LINEAR, AREA, NEAREST, CUBIC,
   LANCZOS4; horizontal flip with ``flip_prob``; ``float32`` minus the mean; ``CHW``.

Speed: the photometric steps are pointwise, so they run on the image pixels inside the crop
window only (exactly the same result). The canvas is never built: only the image part of the
window is resized, to its footprint in the output rounded to whole pixels, and the rest of the
output is filled with the mean. Boxes go through that same rounded map, so they stay aligned
with the pixels; the footprint differs from the reference's by under half an output pixel.

Why not albumentations: ``HueSaturationValue`` shifts saturation additively (SSD scales it) and
assumes RGB; ``RandomBrightnessContrast`` computes ``alpha * v + beta`` in one step with one
probability (SSD: ``v + delta`` saturated, then ``* alpha``, each with its own p). Flip and
resize are single OpenCV calls, cheaper than a bbox-aware ``Compose``.

Deliberate deviations from the reference:
    * ``hue_delta`` is in OpenCV 8-bit hue units (2 degrees) as in Caffe, so the default 18 is
      +-36 degrees; the hue wraps around the circle (Caffe saturates negative shifts at 0).
    * The unconstrained sampler (Caffe: ``max_jaccard_overlap: 1.0``) also succeeds when the
      image has no boxes.
    * Boxes narrower or lower than ``min_box_pixels`` output pixels (default 1, i.e. ``1/S``
      normalised) are dropped with their labels; Caffe keeps any positive size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from dsod.config import AugmentConfig
from dsod.data.extra_augment import ExtraAugment

if TYPE_CHECKING:
    import torch

INTERPOLATIONS: tuple[int, ...] = (
    cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4,
)
CROP_TRIALS = 50  # per sampler, the reference's max_trials
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


def _round_div(num: int, den: int) -> int:
    """``round(num / den)`` (halves up) in integers, for ``den > 0``."""
    return (2 * num + den) // (2 * den)


def _worker_seed() -> int | None:
    """The DataLoader worker's seed in a worker process, else None."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return None if info is None else int(info.seed)


def box_iou(boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """IoU of ``boxes`` ``[N, 4]`` with ``windows`` ``[T, 4]`` (both ``xyxy``); ``[T, N]``."""
    lt = np.maximum(windows[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(windows[:, None, 2:], boxes[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_w = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    return inter / np.maximum(area_w[:, None] + area_b[None, :] - inter, 1e-12)


def normalize_to_chw(image: np.ndarray, mean_bgr: Sequence[float]) -> np.ndarray:
    """BGR ``uint8 [H, W, 3]`` to ``float32 [3, H, W]`` minus ``mean_bgr``."""
    planar = np.ascontiguousarray(image.transpose(2, 0, 1))
    return np.subtract(planar, np.asarray(mean_bgr, dtype=np.float32)[:, None, None],
                       dtype=np.float32)


def image_to_tensor(image: np.ndarray, size: int,
                    mean_bgr: Sequence[float] = (104.0, 117.0, 123.0)) -> "torch.Tensor":
    """One BGR ``uint8 [H, W, 3]`` image to the network input: ``torch.float32 [3, S, S]``
    (linear warp-resize, minus the mean), as :class:`TestTransform`."""
    import torch

    return torch.from_numpy(TestTransform(size, mean_bgr)(image)[0])


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
    """

    def __init__(self, size: int, cfg: AugmentConfig, rng: np.random.Generator | None = None,
                 seed: int | None = None, min_box_pixels: float = 1.0) -> None:
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

    def draw_photometric(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """Draw one distortion: ``(pre, hsv, post)`` tables (None: skip), for
        :meth:`apply_photometric`: ``pre`` and ``post`` ``uint8 [256]`` on BGR, ``hsv``
        ``uint8 [256, 1, 3]`` on the 8-bit HSV image."""
        cfg, rng = self.cfg, self.rng
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

    @staticmethod
    def apply_photometric(image: np.ndarray, plan: tuple[np.ndarray | None, ...]) -> np.ndarray:
        """Apply a :meth:`draw_photometric` plan to BGR ``uint8 [H, W, 3]``; returns a new
        array, or ``image`` itself when the plan is empty (``image`` is never modified)."""
        pre, hsv, post = plan
        out = image if pre is None else cv2.LUT(image, pre)
        if hsv is not None:
            out = cv2.cvtColor(cv2.LUT(cv2.cvtColor(out, cv2.COLOR_BGR2HSV), hsv),
                               cv2.COLOR_HSV2BGR)
        return out if post is None else cv2.LUT(out, post)

    def photometric(self, image: np.ndarray) -> np.ndarray:
        """Random brightness, contrast, saturation and hue of BGR ``uint8 [H, W, 3]``."""
        return self.apply_photometric(image, self.draw_photometric())

    def sample_crop(self, width: int, height: int,
                    boxes: np.ndarray) -> tuple[int, int, int, int]:
        """A crop window ``(x0, y0, x1, y1)`` (integer pixels) of a ``width x height`` image
        with absolute ``xyxy`` ``boxes`` ``[N, 4]``, by SSD's batch samplers."""
        cfg, rng = self.cfg, self.rng
        constraints: list[float | None] = [*cfg.crop_min_ious, None]
        n, t = len(constraints), CROP_TRIALS
        scale = rng.uniform(cfg.crop_scale[0], cfg.crop_scale[1], (n, t))
        aspect = np.clip(rng.uniform(cfg.crop_aspect[0], cfg.crop_aspect[1], (n, t)),
                         scale ** 2, 1.0 / scale ** 2)
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
            best = box_iou(boxes.astype(np.float64), windows.reshape(-1, 4).astype(np.float64))
            best = best.max(axis=1).reshape(n, t)
        candidates = [(0, 0, width, height)]
        for i, min_iou in enumerate(constraints):
            if min_iou is not None and best is None:
                continue
            hits = np.flatnonzero(best[i] >= min_iou) if min_iou is not None else [0]
            if len(hits):
                candidates.append(tuple(int(v) for v in windows[i, hits[0]]))
        return candidates[int(rng.integers(len(candidates)))]

    def __call__(self, image: np.ndarray, boxes: np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
            raise ValueError(f"expected a BGR uint8 [H, W, 3] image, got {image.dtype} "
                             f"{image.shape}")
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

        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = ((centre[:, 0] >= x0) & (centre[:, 0] <= x1)
                & (centre[:, 1] >= y0) & (centre[:, 1] <= y1))
        boxes, labels = boxes[keep], labels[keep]
        part = (max(x0, ox), max(y0, oy), min(x1, ox + w), min(y1, oy + h))
        if part[2] <= part[0] or part[3] <= part[1]:  # the window misses the image
            part = dest = None
            patch = np.empty((size, size, 3), dtype=np.uint8)
            patch[:, :] = self._fill
            boxes, labels = np.zeros((0, 4)), labels[:0]
        else:
            dl = min(_round_div((part[0] - x0) * size, x1 - x0), size - 1)
            dt = min(_round_div((part[1] - y0) * size, y1 - y0), size - 1)
            dr = _round_div((part[2] - x0) * size, x1 - x0)
            db = _round_div((part[3] - y0) * size, y1 - y0)
            dr, db = min(max(dr, dl + 1), size), min(max(db, dt + 1), size)
            dest = (dl, dt, dr, db)
            src = image[part[1] - oy:part[3] - oy, part[0] - ox:part[2] - ox]
            patch = cv2.resize(self.apply_photometric(src, plan), (dr - dl, db - dt),
                               interpolation=interpolation)
            if dest != (0, 0, size, size):
                patch = cv2.copyMakeBorder(patch, dt, size - db, dl, size - dr,
                                           cv2.BORDER_CONSTANT, value=self._fill)
            lo = np.array(part[:2] * 2, dtype=np.float64)
            gain = np.array([(dr - dl) / (part[2] - part[0]), (db - dt) / (part[3] - part[1])] * 2)
            boxes = (np.clip(boxes, lo, part[2:] * 2) - lo) * gain + [dl, dt, dl, dt]
            boxes = np.clip(boxes / size, 0.0, 1.0)
        if flip:
            patch = cv2.flip(patch, 1)
            boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)

        boxes = boxes.astype(np.float32).reshape(-1, 4)
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        min_side = self.min_box_pixels / size - 1e-6  # float32 slack
        big = (bw >= min_side) & (bh >= min_side) & (bw > 0) & (bh > 0)
        self.last = AugmentRecord((cw, ch), (ox, oy), (x0, y0, x1, y1), part, dest, flip,
                                  interpolation)
        return normalize_to_chw(patch, self._mean), boxes[big], labels[big]


class TestTransform:
    """Test-time preprocessing: linear warp-resize to ``size x size``, minus the mean."""

    __test__ = False  # not a pytest class

    def __init__(self, size: int, mean_bgr: Sequence[float] = (104.0, 117.0, 123.0)) -> None:
        self.size = int(size)
        self.mean_bgr = tuple(float(v) for v in mean_bgr)

    def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None,
                 labels: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """BGR ``uint8 [H, W, 3]`` to ``float32 [3, S, S]``; ``boxes`` and ``labels`` come
        back unchanged, whatever their format."""
        resized = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return normalize_to_chw(resized, self.mean_bgr), boxes, labels
