"""Detection in one call, for scripts and notebooks.

    from dsod.inference import Detector
    detector = Detector.from_checkpoint("outputs/dsod300_voc/final.pth", score_threshold=0.5)
    result = detector("street.jpg")            # or a BGR uint8 array, or a list of either
    for box, score, name in zip(result.boxes, result.scores, result.class_names):
        print(name, score, box)                # box: absolute xyxy in the image's pixels

Images are resized to the network's ``S x S`` input as at test time (linear warp, mean
subtracted); boxes come back in the original image's pixels, following
:mod:`dsod.structures` (absolute ``xyxy``, continuous pixel coordinates, clipped to the image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np
import torch
from torch import nn

from dsod.config import Config, config_from_dict, config_to_dict, load_config
from dsod.data.image_io import read_image
from dsod.data.transforms import TestTransform
from dsod.engine.builders import build_postprocessor
from dsod.engine.checkpoint import (CheckpointError, adopt_checkpoint_settings,
                                    check_prediction_settings, load_checkpoint, load_model_weights)
from dsod.engine.evaluate import channels_last_for
from dsod.precision import amp_dtype, autocast_context, resolve_amp
from dsod.models.detector import build_model
from dsod.runtime.compiled import compile_for_inference
from dsod.runtime.cuda_graph import CUDAGraphForward
from dsod.runtime.speed_paths import for_inference
from dsod.structures import Detections

ImageInput = Union[str, Path, np.ndarray]

__all__ = ["DetectionResult", "Detector", "ImageInput", "as_bgr_image", "inference_model"]


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

    def to_detections(self) -> Detections:
        """The same boxes as a :class:`~dsod.structures.Detections` record."""
        return Detections(self.boxes, self.scores, self.labels)


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
            It runs in eval mode and is put back in its previous mode after each call, so a
            model in training can be used.
        config: the config the model was built from (input size, mean, priors, test settings).
        device: where to run, e.g. ``"cpu"`` or ``"cuda:0"`` (the model is moved there);
            default: where the model's parameters are.
        score_threshold: detections scoring below it are dropped.
        class_names: the ``C`` class names; default ``config.data.class_names`` (and
            ``class_<l>`` when the config has none, as COCO configs that read names from JSON).
        batch_size: images per forward pass; default ``config.test.batch_size``.
        cuda_graphs: on a CUDA device, replay each batch shape's forward pass from a recorded
            CUDA graph (:class:`~dsod.runtime.cuda_graph.CUDAGraphForward`): same detections,
            much less host time per image at small batches. The model must then stay in eval
            mode with its weights in place; ignored on the CPU.
        amp: ``"none"`` (fp32), ``"bf16"`` or ``"fp16"``: run the network under autocast to
            that type (bf16 on a CPU with AMX or AVX-512 BF16, fp16 on a GPU); post-processing
            stays in fp32. Detections then differ from fp32 ones by rounding.
        compile: run the network through Inductor with frozen weights
            (:func:`~dsod.runtime.compiled.compile_for_inference`): same detections up to
            rounding; for DSOD300 on a 2-core CPU with AMX 1.5-2 times as fast in bf16 and
            up to 13% faster in fp32, after 15-30 s of compiling at the first batch of each
            size; worth it for videos and folders. The model's weights must then stay as
            they are. With ``cuda_graphs`` the compiled network is the one recorded: for
            DSOD300 in bf16 on an H200, 1.0 ms per image at batch 1 against 1.6 ms
            uncompiled, and 1.7 times the images per second at batch 8.
        channels_last: run the network in the channels-last (NHWC) layout; the model is
            converted in place. :meth:`from_checkpoint` chooses as training does
            (``train.channels_last``; unset: on the CPU, where it is faster).
    """

    def __init__(self, model: nn.Module, config: Config, device: str | torch.device | None = None,
                 score_threshold: float = 0.3, class_names: Sequence[str] | None = None,
                 batch_size: int | None = None, cuda_graphs: bool = False,
                 amp: str = "none", compile: bool = False, channels_last: bool = False
                 ) -> None:
        self.config = config
        if device is None:
            device = next(model.parameters(), torch.empty(0)).device
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        amp, _ = resolve_amp(amp, self.device)  # "auto": as training chooses (dsod.precision)
        dtype = amp_dtype(amp)
        self.amp = amp
        self._compiled = compile_for_inference(self.model) if compile else None
        # What a batch runs through: the compiled network if asked, replayed from CUDA
        # graphs if asked (on a GPU).
        self._network = self._compiled if self._compiled is not None else self.model
        self._graphed = (CUDAGraphForward(self._network, autocast_dtype=dtype)
                         if cuda_graphs and self.device.type == "cuda" else None)
        self.transform = TestTransform(config.model.input_size, config.augment.mean_bgr)
        self.postprocessor = build_postprocessor(config)
        self.batch_size = max(1, int(batch_size or config.test.batch_size))
        num_classes = config.num_classes - 1
        names = class_names if class_names is not None else config.data.class_names
        if names is None:
            names = [f"class_{label}" for label in range(1, num_classes + 1)]
        if len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for a model with {num_classes} classes")
        self.class_names: list[str] = [str(n) for n in names]
        self.score_threshold = score_threshold

    @property
    def score_threshold(self) -> float:
        return self._score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        # Candidates below the threshold can only suppress lower-scored ones in NMS, so
        # dropping them before NMS gives the same result, faster.
        self._score_threshold = float(value)
        self.postprocessor.conf_threshold = max(self.config.test.conf_threshold,
                                                self._score_threshold)

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: Config | str | Path | None = None,
                        overrides: Sequence[str] = (), device: str | torch.device = "cpu",
                        score_threshold: float = 0.3, batch_size: int | None = None,
                        cuda_graphs: bool = False, amp: str = "none",
                        compile: bool = False) -> "Detector":
        """Load a detector from a training checkpoint.

        Args:
            path: a checkpoint written by training (``{"model": state_dict, "config": ...}``).
            config: ``None`` takes the config saved in the checkpoint; a path is loaded with
                :func:`~dsod.config.load_config`; a :class:`Config` is used as is.
            overrides: ``key=value`` config overrides (e.g. ``test.nms_iou=0.5``).
            device, score_threshold, batch_size, cuda_graphs, amp, compile: as for the
                constructor. The network is built as evaluation runs it
                (:func:`~dsod.runtime.speed_paths.for_inference`: BNs folded, the layout
                training chose for the device, weights stored in the ``amp`` dtype, so
                it then runs only under that autocast, as :meth:`detect_arrays` runs it).

        Raises:
            CheckpointError: the file is unreadable, has no config (and none was given), its
                weights do not fit the config's model (the message lists the keys), or it
                was trained with other priors, input size or mean than the config gives.
            ConfigError: the config or an override is invalid.
        """
        state = load_checkpoint(path)
        if config is None:
            raw = state.get("config")
            if not isinstance(raw, dict):
                raise CheckpointError(f"checkpoint {path} holds no config; pass config=")
            config = config_from_dict(raw, f"the config in checkpoint {path}", overrides)
        elif isinstance(config, (str, Path)):
            config = load_config(config, overrides)
        elif overrides:
            config = config_from_dict(config_to_dict(config), "<config>", overrides)
        config = adopt_checkpoint_settings(config, state, f"checkpoint {path}")
        check_prediction_settings(state.get("config"), config, f"checkpoint {path}")
        model = build_model(config)
        load_model_weights(model, state["model"], source=f"checkpoint {path}")
        # As evaluation runs it: BNs folded, the training layout, weights in the amp dtype.
        channels_last = channels_last_for(config.train.channels_last, torch.device(device))
        amp, _ = resolve_amp(amp, device)
        model = for_inference(model, speed_paths=config.train.speed_paths,
                              channels_last=channels_last, dtype=amp_dtype(amp))
        names = state.get("class_names")
        names = list(names) if isinstance(names, (list, tuple)) else None
        if names is not None and len(names) != config.num_classes - 1:
            raise CheckpointError(f"checkpoint {path} names {len(names)} classes {names} for a "
                                  f"model with {config.num_classes - 1}")
        return cls(model, config, device, score_threshold, names, batch_size, cuda_graphs, amp,
                   compile, channels_last)

    @torch.inference_mode()
    def detect_arrays(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Raw detections of uint8 BGR ``[H, W, 3]`` images, in each image's pixels.

        Runs in batches of ``batch_size``; keeps detections ``>= score_threshold``.
        """
        results: list[Detections] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(images), self.batch_size):
                chunk = images[start:start + self.batch_size]
                batch = torch.from_numpy(np.stack([self.transform(im)[0] for im in chunk]))
                batch = batch.to(self.device)
                if self.channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                if self._graphed is not None:
                    logits, offsets = self._graphed(batch)
                else:
                    with autocast_context(self.device, self.amp):
                        logits, offsets = self._network(batch)
                sizes = [(int(im.shape[1]), int(im.shape[0])) for im in chunk]
                for det in self.postprocessor(logits, offsets, sizes):
                    keep = det.scores >= self._score_threshold
                    results.append(Detections(det.boxes[keep], det.scores[keep],
                                              det.labels[keep]))
        finally:
            self.model.train(was_training)
        return results

    def __call__(self, images: ImageInput | Sequence[ImageInput]
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
                boxes=det.boxes, scores=det.scores, labels=det.labels,
                class_names=[self.class_names[label - 1] for label in det.labels.tolist()],
                image_size=(int(array.shape[1]), int(array.shape[0])), source=source)
            for det, (array, source) in zip(detections, loaded)
        ]
        return results[0] if single else results


def inference_model(detector: Detector, image: ImageInput | Sequence[ImageInput]
                    ) -> DetectionResult | list[DetectionResult]:
    """Run ``detector`` on one image (path or BGR array) or a list of them; see
    :meth:`Detector.__call__`."""
    return detector(image)
