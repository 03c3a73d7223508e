"""Detection in one call, for scripts and notebooks.

    from dsod.inference import Detector
    detector = Detector.from_checkpoint("outputs/dsod300_voc/checkpoints/final.pth",
                                        score_threshold=0.5)
    result = detector("street.jpg")            # or a BGR uint8 array, or a list of either
    for box, score, name in zip(result.boxes, result.scores, result.class_names):
        print(name, score, box)                # box: absolute xyxy in the image's pixels

Images are resized to the network's ``S x S`` input as at test time (linear warp, mean
subtracted); boxes come back in the original image's pixels, following
:mod:`dsod.structures` (absolute ``xyxy``, continuous pixel coordinates, clipped to the image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from dsod.config import Config
from dsod.config.labels import object_labels
from dsod.data.image_io import read_image
from dsod.data.transforms import TestTransform
from dsod.engine.builders import build_postprocessor
from dsod.engine.trained_model import load_trained_model
from dsod.runtime.network import RunSettings, prepare_network
from dsod.structures import Detections

ImageInput = str | Path | np.ndarray

__all__ = ["DetectionResult", "Detector", "ImageInput", "as_bgr_image"]


@dataclass
class DetectionResult:
    """The detections of one image, best first.

    Attributes:
        boxes: float32 ``[K, 4]`` absolute ``xyxy`` in the original image's pixels.
        scores: float32 ``[K]`` class confidences in ``[0, 1]``, all ``>= score_threshold``.
        labels: int64 ``[K]`` in ``1..C`` (0, background, never appears).
        class_names: ``K`` strings, the class name of each detection.
        image_size: ``(width, height)`` of the image the boxes refer to.
        source: the file the image came from, or ``None`` for an array.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    image_size: tuple[int, int]
    source: str | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def as_bgr_image(image: ImageInput) -> tuple[np.ndarray, str | None]:
    """An input image as uint8 BGR ``[H, W, 3]`` plus its file name (``None`` for arrays).

    Arrays may also be grayscale ``[H, W]`` / ``[H, W, 1]`` or BGRA ``[H, W, 4]`` (alpha
    dropped). Files are read with :func:`dsod.data.image_io.read_image`.

    Raises:
        ImageReadError: a file is missing or cannot be decoded (the message names it).
        ValueError: an array that is not uint8 or not an image shape.
    """
    if isinstance(image, (str, Path)):
        return read_image(image), str(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a file path or a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 BGR image array, got dtype {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a BGR image array [H, W, 3], got shape {image.shape}")
    return np.ascontiguousarray(image), None


class Detector:
    """A trained detector, ready to run on images.

    Args:
        model: the network (``images [B, 3, S, S] -> (logits [B, P, C+1], offsets [B, P, 4])``).
            The detector runs an eval-mode copy of it prepared as evaluation runs it
            (:func:`~dsod.runtime.network.prepare_network`: BNs folded, weights stored in
            the ``amp`` dtype; ``config.train.speed_paths`` false runs the plain modules),
            so ``model`` itself is left as it is, and changes made to it later are not
            seen (make a new detector).
        config: the config the model was built from (input size, mean, priors, test settings).
        device: where to run, e.g. ``"cpu"`` or ``"cuda:0"``; default: where the model's
            parameters are.
        score_threshold: detections scoring below it are dropped.
        class_names: the ``C`` class names; default ``config.data.class_names`` (and
            ``class_<l>`` when the config has none, as COCO configs that read names from JSON).
        batch_size: images per forward pass; default ``config.test.batch_size``.
        cuda_graphs: on a CUDA device, replay each batch shape's forward pass from a recorded
            CUDA graph (:class:`~dsod.runtime.cuda_graph.CUDAGraphForward`): same detections,
            much less host time per image at small batches; ignored on the CPU.
        amp: ``"none"`` (fp32), ``"bf16"`` or ``"fp16"``: run the network under autocast to
            that type (bf16 on a CPU with AMX or AVX-512 BF16, fp16 on a GPU); ``"auto"``
            chooses as training does. Post-processing stays in fp32. Detections then differ
            from fp32 ones by rounding.
        compile: run the network through Inductor with frozen weights
            (:func:`~dsod.runtime.compiled.compile_for_inference`): same detections up to
            rounding, faster after compiling at the first batch of each size; worth it for
            videos and folders. With ``cuda_graphs`` the compiled network is the one
            recorded. docs/PERFORMANCE.md has what each choice gains.
        channels_last: run the network in the channels-last (NHWC) layout; None chooses
            as training does (``train.channels_last``; unset: on the CPU, where it is
            faster), as :meth:`from_checkpoint` does.
    """

    def __init__(
        self,
        model: nn.Module,
        config: Config,
        device: str | torch.device | None = None,
        score_threshold: float = 0.3,
        class_names: Sequence[str] | None = None,
        batch_size: int | None = None,
        cuda_graphs: bool = False,
        amp: str = "none",
        compile: bool = False,
        channels_last: bool | None = False,
    ) -> None:
        self.config = config
        if device is None:
            device = next(model.parameters(), torch.empty(0)).device
        # As evaluation runs it (dsod.runtime.network): an eval-mode copy with its BNs
        # folded, weights stored in the amp dtype, compiled and replayed from CUDA graphs
        # if asked; amp "auto" chooses as training does (dsod.runtime.precision).
        settings = RunSettings.resolve(
            device,
            amp,
            config.train.channels_last if channels_last is None else channels_last,
            config.train.speed_paths,
        )
        self.network = prepare_network(
            model, settings, training=False, compile=compile, cuda_graphs=cuda_graphs
        )
        self.device, self.amp = settings.device, settings.amp
        self.transform = TestTransform(config.model.input_size, config.augment.mean_bgr)
        self.postprocessor = build_postprocessor(config)
        self.batch_size = max(1, int(batch_size or config.test.batch_size))
        num_classes = config.num_object_classes
        names = class_names if class_names is not None else config.data.class_names
        if names is None:
            names = [f"class_{label}" for label in object_labels(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for a model with {num_classes} classes")
        self.class_names: list[str] = [str(n) for n in names]
        self.score_threshold = score_threshold

    @property
    def model(self) -> nn.Module:
        """The network as it runs: an eval-mode copy of the model given, BNs folded."""
        return self.network.model

    @property
    def score_threshold(self) -> float:
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        # Candidates below the threshold can only suppress lower-scored ones in NMS, so
        # dropping them before NMS gives the same result, faster.
        self._score_threshold = float(value)
        self.postprocessor.conf_threshold = max(
            self.config.test.conf_threshold, self._score_threshold
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        config: Config | str | Path | None = None,
        overrides: Sequence[str] = (),
        device: str | torch.device = "cpu",
        score_threshold: float = 0.3,
        batch_size: int | None = None,
        cuda_graphs: bool = False,
        amp: str = "none",
        compile: bool = False,
    ) -> Detector:
        """Load a detector from a training checkpoint.

        Args:
            path: a checkpoint written by training (``{"model": state_dict, "config": ...}``).
            config: ``None`` takes the config saved in the checkpoint; a path is loaded with
                :func:`~dsod.config.load_config`; a :class:`Config` is used as is.
            overrides: ``key=value`` config overrides (e.g. ``test.nms_iou=0.5``).
            device, score_threshold, batch_size, cuda_graphs, amp, compile: as for the
                constructor (the checkpoint is read by
                :func:`~dsod.engine.trained_model.load_trained_model`).

        Raises:
            CheckpointError, ConfigError: as
                :func:`~dsod.engine.trained_model.load_trained_model` raises them (an
                unreadable file, weights or settings that do not fit the config, ...).
        """
        trained = load_trained_model(path, config, overrides)
        return cls(
            trained.model,
            trained.config,
            device,
            score_threshold,
            trained.class_names,
            batch_size,
            cuda_graphs,
            amp,
            compile,
            channels_last=None,
        )

    @torch.inference_mode()
    def detect_arrays(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Raw detections of uint8 BGR ``[H, W, 3]`` images, in each image's pixels.

        Runs in batches of ``batch_size``; keeps detections ``>= score_threshold``.
        """
        results: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = torch.from_numpy(np.stack([self.transform(im)[0] for im in chunk]))
            logits, offsets = self.network.run(batch)
            sizes = [(int(im.shape[1]), int(im.shape[0])) for im in chunk]
            for det in self.postprocessor(logits, offsets, sizes):
                keep = det.scores >= self._score_threshold
                results.append(Detections(det.boxes[keep], det.scores[keep], det.labels[keep]))
        return results

    def __call__(
        self, images: ImageInput | Sequence[ImageInput]
    ) -> DetectionResult | list[DetectionResult]:
        """Detect objects in one image or a list of images.

        Args:
            images: a file path, a uint8 BGR ``[H, W, 3]`` array, or a list of those.

        Returns:
            One :class:`DetectionResult` for a single image, a list for a list.
        """
        single = isinstance(images, (str, Path, np.ndarray))
        items = [images] if single else list(images)
        loaded = [as_bgr_image(item) for item in items]
        detections = self.detect_arrays([array for array, _ in loaded])
        results = [
            DetectionResult(
                boxes=det.boxes,
                scores=det.scores,
                labels=det.labels,
                class_names=[self.class_names[label - 1] for label in det.labels.tolist()],
                image_size=(int(array.shape[1]), int(array.shape[0])),
                source=source,
            )
            for det, (array, source) in zip(detections, loaded)
        ]
        return results[0] if single else results
