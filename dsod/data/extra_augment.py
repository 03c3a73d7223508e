"""``augment.extra``: albumentations transforms of the user's choosing, before SSD's steps.

Each entry names a transform of albumentations (https://albumentations.ai) with its
arguments, as in the YAML::

    augment:
      extra:
        - {name: GaussianBlur, blur_limit: [3, 5], p: 0.2}
        - {name: CLAHE, p: 0.1}
        - {name: Affine, rotate: [-10, 10], p: 0.3}

They run in that order on the original image (RGB, as albumentations expects) and its
boxes, bbox-aware: boxes move with the pixels, are clipped to the image, and are dropped
when albumentations drops them (e.g. moved wholly outside). SSD's photometric distortion,
expand, crop, resize and flip follow as configured. Randomness comes from the training
transform's own generator, so a run stays reproducible.

The entries are checked here, where the training transform builds them (the config only
checks that each is a mapping): an entry that names no transform, an argument the transform
does not take, a bad value or a transform that cannot move boxes is a
:class:`~dsod.config.ConfigError` naming ``augment.extra[i]`` and the problem.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from dsod.config import ConfigError


def _albumentations():
    import albumentations

    return albumentations


def _transform_class(name: Any, where: str) -> type:
    A = _albumentations()
    base = A.core.transforms_interface.BasicTransform
    known = sorted(
        n
        for n, v in vars(A).items()
        if isinstance(v, type) and issubclass(v, base) and not n.startswith("_")
    )
    if not isinstance(name, str) or name not in known:
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"{where}: {name!r} is not an albumentations transform{hint}")
    return getattr(A, name)


def build_transform(spec: Mapping[str, Any], where: str) -> Any:
    """One albumentations transform from ``{"name": NAME, **arguments}``.

    Raises:
        ConfigError: the entry is not a mapping with a ``name``, names no albumentations
            transform, or gives an argument the transform does not take or a bad value.
    """
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(
            f"{where}: expected a mapping with a name, e.g. "
            f"{{name: GaussianBlur, p: 0.2}}, got {spec!r}"
        )
    cls = _transform_class(spec["name"], where)
    arguments = {k: v for k, v in spec.items() if k != "name"}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    for key in arguments:
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; it takes {sorted(accepted)}"
            raise ConfigError(f"{where}: {spec['name']} has no argument {key!r}{hint}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()})
    except Exception as error:  # noqa: BLE001  # pydantic's ValidationError is a ValueError; others too
        first = str(error).strip().splitlines()
        raise ConfigError(f"{where}: {spec['name']}: {' '.join(first[:3])}") from None


class ExtraAugment:
    """The ``augment.extra`` transforms as one bbox-aware pipeline.

    Args:
        specs: the entries (``{"name": ..., **arguments}``), in order.
        source: the file or override that set them, for error messages.

    Raises:
        ConfigError: an entry cannot be built, or its transform cannot handle boxes; the
            message names ``augment.extra[i]`` (and ``source``, when given).
    """

    def __init__(self, specs: Sequence[Mapping[str, Any]], source: str | None = None) -> None:
        A = _albumentations()
        suffix = f" in {source}" if source else ""
        where = f"augment.extra{suffix}"
        transforms = [
            build_transform(spec, f"augment.extra[{i}]{suffix}") for i, spec in enumerate(specs)
        ]
        with warnings.catch_warnings():  # image-only transforms leave the boxes as they are
            warnings.filterwarnings("ignore", "Got processor for bboxes")
            self.compose = A.Compose(
                transforms,
                bbox_params=A.BboxParams(
                    format="pascal_voc",
                    label_fields=["labels"],
                    clip=True,
                    filter_invalid_bboxes=True,
                ),
                seed=0,
                strict=False,
            )
        try:  # a transform that cannot move boxes fails here, not in a worker mid-run
            probe = np.zeros((8, 8, 3), np.uint8)
            self.compose(image=probe, bboxes=np.array([[1.0, 1.0, 6.0, 6.0]]), labels=[1])
        except Exception as error:  # noqa: BLE001 - any failure means unusable for detection
            raise ConfigError(
                f"{where}: cannot be applied to an image with boxes "
                f"({type(error).__name__}: {error})"
            ) from None

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply the pipeline with random state ``seed``.

        Args:
            image: BGR ``uint8 [H, W, 3]``.
            boxes: ``[N, 4]`` absolute ``xyxy`` inside the image.
            labels: ``int64 [N]``.

        Returns:
            The BGR ``uint8`` image (its size may change), ``float64 [M, 4]`` absolute
            ``xyxy`` boxes inside it and their ``int64 [M]`` labels.
        """
        self.compose.set_random_seed(seed)
        out = self.compose(
            image=cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
            bboxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        )
        result = np.ascontiguousarray(out["image"])
        if result.dtype != np.uint8:
            result = np.clip(result, 0, 255).astype(np.uint8)
        if result.ndim == 2:
            result = cv2.cvtColor(result, cv2.COLOR_GRAY2RGB)
        return (
            cv2.cvtColor(result, cv2.COLOR_RGB2BGR),
            np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4),
            np.asarray(out["labels"], dtype=np.int64).reshape(-1),
        )
