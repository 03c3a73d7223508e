"""Build the configured train or test data set from a :class:`~dsod.config.DataConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from dsod.config import DataConfig
from dsod.data.coco import COCODataset
from dsod.data.errors import DataError, SplitNotFoundError
from dsod.data.base import README_HINT, DetectionDataset
from dsod.data.voc import VOCDataset


def coco_split_paths(root: str | Path, entry: str) -> tuple[Path, Path]:
    """``(annotation_json, image_dir)`` of a COCO split entry.

    ``NAME`` is ``root/annotations/instances_NAME.json`` with images in ``root/NAME``;
    ``ANNOTATION_JSON:IMAGE_DIR`` are both relative to ``root`` (or absolute).
    """
    root = Path(root)
    json_part, sep, image_part = entry.partition(":")
    if sep:
        if not json_part or not image_part:
            raise DataError(f"COCO split {entry!r}: expected NAME or ANNOTATION_JSON:IMAGE_DIR")
        return root / json_part, root / image_part
    return root / "annotations" / f"instances_{entry}.json", root / entry


class ConcatDetectionDataset(DetectionDataset):
    """Several data sets with the same classes, one after the other (e.g. COCO 2014 train +
    valminusminival). COCO parts must share ``category_ids``; ``image_id_to_coco_id`` is
    merged."""

    def __init__(self, parts: Sequence[DetectionDataset]) -> None:
        if not parts:
            raise DataError("no data set to concatenate")
        names = parts[0].class_names
        for part in parts[1:]:
            if part.class_names != names:
                raise DataError(f"the splits name different classes: {list(names)} and "
                                f"{list(part.class_names)}")
        annotations = [a for part in parts for a in part.annotations]
        problems = [p for part in parts for p in part.problems]
        super().__init__(names, annotations, problems, parts[0].keep_difficult)
        self.parts = tuple(parts)
        if all(isinstance(p, COCODataset) for p in parts):
            ids = {p.category_ids for p in parts}  # type: ignore[attr-defined]
            if len(ids) != 1:
                raise DataError("the COCO splits use different category ids")
            self.category_ids: tuple[int, ...] = ids.pop()
            self.image_id_to_coco_id: dict[str, Any] = {}
            for part in parts:
                self.image_id_to_coco_id.update(part.image_id_to_coco_id)  # type: ignore


def build_dataset(data_config: DataConfig, split: str, strict: bool | None = None
                  ) -> VOCDataset | COCODataset | ConcatDetectionDataset:
    """The ``"train"`` or ``"test"`` data set the config names.

    Paths are relative to the current directory. For ``"train"``, ``keep_difficult`` is
    ``data_config.train_difficult``; the test set keeps every box (difficult ones flagged).
    ``strict`` (default: ``data_config.on_bad_sample == "error"``) raises on the first
    unusable annotation file instead of recording it in ``problems``. ``format: shapes``
    writes the generated data set under ``root`` on first use and reads it as VOC.

    Raises:
        DataError: a root, split file or annotation file is missing or unusable.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    entries = data_config.train if split == "train" else data_config.test
    if not entries:
        raise DataError(f"data.{split} names no split")
    keep_difficult = data_config.train_difficult if split == "train" else True
    if strict is None:
        strict = data_config.on_bad_sample == "error"
    root = Path(data_config.root)
    fmt = data_config.format
    if fmt == "shapes":
        from dsod.data.shapes import ensure_shapes_dataset
        ensure_shapes_dataset(root, data_config.shapes_train_images,
                              data_config.shapes_test_images, data_config.shapes_image_size)
        fmt = "voc"
    if fmt == "voc":
        if data_config.class_names is None:
            raise DataError("format voc needs data.class_names")
        return VOCDataset(root, entries, data_config.class_names,
                          keep_difficult=keep_difficult, strict=strict)
    if fmt == "coco":
        if not root.is_dir():
            raise SplitNotFoundError(f"COCO data set root {root} (absolute: {root.absolute()}) "
                                     f"does not exist or is not a folder; {README_HINT}")
        parts = [COCODataset(*coco_split_paths(root, entry), class_names=data_config.class_names,
                             keep_difficult=keep_difficult, strict=strict) for entry in entries]
        return parts[0] if len(parts) == 1 else ConcatDetectionDataset(parts)
    raise DataError(f"unknown data.format {fmt!r}; expected voc, coco or shapes")
