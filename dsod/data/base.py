"""The part every data-set reader shares: annotations held in memory, image loading."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from dsod.config.class_names import clean_class_name, describe_clashes, find_clashes
from dsod.data.errors import DataError, Problem
from dsod.data.image_io import check_pixel_count, read_image
from dsod.structures import Annotation

README_HINT = "see data/README.md for how to download and lay out the data sets"


def check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """The class names as a tuple, each cleaned
    (:func:`~dsod.config.class_names.clean_class_name`); an error if the list is empty or
    names one class twice (the same name, or names that differ only in case or spacing)."""
    names = tuple(clean_class_name(n) for n in class_names)
    if not names:
        raise DataError("class_names is empty: name at least one object class")
    clashes = find_clashes(names)
    if clashes:
        raise DataError(
            f"class_names names one class more than once "
            f"({describe_clashes(clashes)}): names that differ only in case or "
            f"spacing are one class"
        )
    return names


class DetectionDataset:
    """What VOC and COCO readers share: a list of :class:`Annotation` plus image loading.

    ``annotations`` / ``annotation(i)`` are the full ground truth, for evaluation: they keep
    every box, ``difficult`` (VOC) or crowd (COCO) boxes flagged in ``Annotation.difficult``.
    Their arrays are read-only, so augmentation cannot change them by accident.

    ``training_targets(i)`` / ``load(i)`` are what training uses: a fresh, writable copy,
    without the flagged boxes when the data set was made with ``keep_difficult=False``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        annotations: list[Annotation],
        problems: list[Problem],
        keep_difficult: bool = True,
    ) -> None:
        self._class_names = check_class_names(class_names)
        self._annotations = annotations
        self.problems: list[Problem] = problems
        self.keep_difficult = keep_difficult
        self._freeze()

    def _freeze(self) -> None:
        for ann in self._annotations:
            for array in (ann.boxes, ann.labels, ann.difficult):
                array.flags.writeable = False

    def __setstate__(self, state: dict) -> None:  # unpickled arrays come back writable
        self.__dict__.update(state)
        self._freeze()

    @property
    def class_names(self) -> tuple[str, ...]:
        """Object class names; label ``l`` (``1..C``) is ``class_names[l - 1]``."""
        return self._class_names

    @property
    def left_out(self) -> list[str]:
        """The files of images the reader had to leave out (an unusable annotation file,
        a missing image): the distinct files of the ``"error"`` problems, sorted."""
        return sorted({p.file for p in self.problems if p.severity == "error"})

    @property
    def annotations(self) -> list[Annotation]:
        """The full ground truth of every image, in data-set order (do not modify)."""
        return self._annotations

    def __len__(self) -> int:
        return len(self._annotations)

    def annotation(self, index: int) -> Annotation:
        """The full ground truth of image ``index``, without reading the image."""
        return self._annotations[index]

    def training_targets(self, index: int) -> Annotation:
        """A writable copy of image ``index``'s annotation, for training.

        With ``keep_difficult=False`` the boxes flagged ``difficult`` are left out.
        """
        ann = self._annotations[index]
        keep = np.ones(len(ann), dtype=bool) if self.keep_difficult else ~ann.difficult
        return Annotation(
            ann.image_id,
            ann.image_path,
            ann.width,
            ann.height,
            boxes=ann.boxes[keep].copy(),
            labels=ann.labels[keep].copy(),
            difficult=ann.difficult[keep].copy(),
        )

    def load_image(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 BGR ``[H, W, 3]`` in the frame its boxes were drawn on.

        The size the annotation declares, ``(width, height)``, is the frame of its boxes: an
        image stored at another size (e.g. downscaled after annotating) is resized to it
        (``cv2.INTER_LINEAR``), so that training targets, evaluation detections and ground
        truth share one frame; ``tools/check_dataset.py`` reports every such image
        (``size_mismatch``). EXIF orientation is handled by :func:`read_image`.

        Raises:
            ImageReadError: the image is missing or unreadable (the message names it).
        """
        ann = self._annotations[index]
        image = read_image(ann.image_path, (ann.width, ann.height))
        if image.shape[1::-1] != (ann.width, ann.height):
            check_pixel_count(ann.image_path, ann.width, ann.height, "its annotation")
            image = cv2.resize(
                image, (int(ann.width), int(ann.height)), interpolation=cv2.INTER_LINEAR
            )
        return image

    def load(self, index: int) -> tuple[np.ndarray, Annotation]:
        """``(image, training_targets(index))``: uint8 BGR ``[H, W, 3]`` and its boxes.

        Raises:
            ImageReadError: the image is missing or unreadable (the message names it).
        """
        return self.load_image(index), self.training_targets(index)
