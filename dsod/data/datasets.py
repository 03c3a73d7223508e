"""Build the configured train or test data set from a :class:`~dsod.config.DataConfig`."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsod.config import DataConfig
from dsod.config.class_names import class_key
from dsod.config.labels import with_background
from dsod.data.base import README_HINT, DetectionDataset
from dsod.data.coco import COCODataset
from dsod.data.errors import DataError, SplitNotFoundError, summarize_problems
from dsod.data.voc import VOCDataset, voc_class_names, voc_split_paths

logger = logging.getLogger(__name__)


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
                raise DataError(
                    f"the splits name different classes: {list(names)} and "
                    f"{list(part.class_names)}"
                )
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


def check_distinct_entries(data_config: DataConfig, split: str) -> None:
    """Raise a DataError when ``data.<split>`` lists one split twice (the same split file,
    or the same COCO JSON and image folder, however written): its images would count
    twice in training or scoring."""
    entries = data_config.train if split == "train" else data_config.test
    seen: dict[Any, str] = {}
    for entry in entries:
        if data_config.format == "coco":
            key: Any = tuple(p.resolve() for p in coco_split_paths(data_config.root, entry))
        else:
            key = voc_split_paths(data_config.root, entry)[0].resolve()
        if key in seen:
            again = "" if seen[key] == entry else f" (as {seen[key]!r} and {entry!r})"
            raise DataError(
                f"data.{split} lists the split {entry!r} twice{again}: its images "
                f"would count twice; list it once"
            )
        seen[key] = entry


def check_classes(
    dataset: DetectionDataset,
    num_object_classes: int,
    expected_names: Sequence[str] | None = None,
    source: str = "the data set",
    expected_from: str = "the model",
) -> None:
    """Raise a DataError unless ``dataset`` has ``num_object_classes`` classes (the model's
    count without the background, :attr:`~dsod.config.Config.num_object_classes`) and, when
    ``expected_names`` is given, those names in that order: labels are positions in the
    class list, so data whose classes come in another order (a COCO JSON with other
    category ids) would silently swap them. A name spelled otherwise only in case or spacing
    is the same class (with a warning)."""
    names = list(dataset.class_names)
    if len(names) != num_object_classes:
        raise DataError(
            f"{source} has {len(names)} classes but {expected_from} has "
            f"{num_object_classes} (model.num_classes = "
            f"{with_background(num_object_classes)} with the background): set "
            f"model.num_classes to {with_background(len(names))} or name the "
            f"classes in data.class_names"
        )
    expected = None if expected_names is None else list(expected_names)
    if expected is not None and len(expected) != len(names):
        raise DataError(
            f"{source} has {len(names)} classes {names} but {expected_from} was "
            f"trained on {len(expected)}: {expected}"
        )
    if expected is not None and [class_key(n) for n in expected] == [class_key(n) for n in names]:
        if expected != names:
            logger.warning(
                "%s spells some classes otherwise than %s (%s): names that differ "
                "only in case or spacing are one class",
                source,
                expected_from,
                ", ".join(f"{a!r} for {b!r}" for a, b in zip(names, expected) if a != b),
            )
    elif expected is not None:
        differ = next(i for i, (a, b) in enumerate(zip(names, expected)) if a != b)
        raise DataError(
            f"{source} orders its classes differently from {expected_from}: label "
            f"{differ + 1} is {names[differ]!r} there but {expected[differ]!r} in "
            f"{expected_from} (the classes: {names} against {expected}); set "
            f"data.class_names to fix the order"
        )


def check_trainable(dataset: DetectionDataset, source: str = "the training split") -> None:
    """Raise a DataError if ``dataset`` has no image, or no box to learn from (every box
    dropped, e.g. class names that the annotations spell otherwise), with the most common
    problems the readers recorded."""
    annotations = [dataset.training_targets(i) for i in range(len(dataset))]
    boxes = sum(len(a) for a in annotations)
    if annotations and boxes:
        return
    kinds = Counter(p.kind for p in getattr(dataset, "problems", []))
    found = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common(4))
    what = "no usable image" if not annotations else f"no box in its {len(annotations)} images"
    raise DataError(
        f"{source} has {what}"
        + (f" (problems found: {found}; tools/check_dataset.py lists them)" if found else "")
    )


def check_unique_image_ids(dataset: DetectionDataset, source: str = "the test split") -> None:
    """Raise a DataError if two images share an ``image_id``: detections are kept per id,
    so a test split needs each once (splits that number their images alike, such as two
    COCO JSONs counting from 0, collide when concatenated)."""
    seen: dict[str, str] = {}
    for index in range(len(dataset)):
        annotation = dataset.annotation(index)
        if annotation.image_id in seen:
            raise DataError(
                f"{source}: image id {annotation.image_id!r} names both "
                f"{seen[annotation.image_id]} and {annotation.image_path}; a test "
                f"split needs unique image ids (score the splits one at a time)"
            )
        seen[annotation.image_id] = annotation.image_path


def check_left_out(dataset: DetectionDataset, limit: float, source: str, remedy: str) -> None:
    """Raise a DataError when more than ``limit`` of the images ``source`` lists had to be
    left out for an unusable annotation file (:attr:`DetectionDataset.left_out`); the
    message ends with ``remedy``."""
    left_out = dataset.left_out
    total = len(dataset) + len(left_out)
    if len(left_out) <= limit * total:
        return
    raise DataError(
        f"{len(left_out)} of the {total} images of {source} "
        f"({100 * len(left_out) / total:.1f}%) have an annotation file that cannot "
        f"be used (first: {left_out[0]}), more than train.max_bad_sample_fraction "
        f"= {limit}; tools/check_dataset.py lists them. {remedy}"
    )


def build_test_set(data_config: DataConfig, max_left_out: float | None = None) -> DetectionDataset:
    """The configured test split, ready to be scored: at least one usable image and each
    image id once (:func:`check_unique_image_ids`); the problems its readers worked around
    (boxes dropped or clipped, unknown classes, ...) are logged as training logs its own
    (:func:`~dsod.data.errors.summarize_problems`), and images left out for unusable
    annotations are counted in a warning.

    Args:
        max_left_out: refuse the split when more than this fraction of its images had to be
            left out (None: score whatever is left).

    Raises:
        DataError: the split is missing, has no usable image, repeats an image id, or left
            out more than ``max_left_out`` of its images.
    """
    dataset = build_dataset(data_config, "test")
    source = f"the test split {list(data_config.test)}"
    for part in getattr(dataset, "parts", (dataset,)):
        if isinstance(part, COCODataset) and not part.has_annotations:
            raise DataError(
                f"{source}: {part.annotation_json} has no 'annotations' list, so "
                f"there is no ground truth to score against (an image-info or "
                f"test-dev file?)"
            )
    left_out = dataset.left_out
    total = len(dataset) + len(left_out)
    if max_left_out is not None:
        check_left_out(
            dataset,
            max_left_out,
            source,
            "Figures on the rest would not be the split's: fix them, or score the "
            "rest with tools/eval.py --partial, which says what it left out",
        )
    if len(dataset) == 0:
        raise DataError(f"{source} under {data_config.root} has no usable image")
    check_unique_image_ids(dataset, source)
    for line in summarize_problems(dataset.problems):
        logger.warning("test data: %s", line)
    if left_out:
        logger.warning(
            "%d of the %d test images were left out for unusable annotations "
            "(first: %s); tools/check_dataset.py lists them",
            len(left_out),
            total,
            left_out[0],
        )
    return dataset


def build_dataset(
    data_config: DataConfig, split: str, strict: bool | None = None
) -> VOCDataset | COCODataset | ConcatDetectionDataset:
    """The ``"train"`` or ``"test"`` data set the config names.

    Paths are relative to the current directory. For ``"train"``, ``keep_difficult`` is
    ``data_config.train_difficult``; the test set keeps every box (difficult ones flagged).
    ``strict`` (default: ``data_config.on_bad_sample == "error"``) raises on the first
    unusable annotation file instead of recording it in ``problems``. ``format: shapes``
    writes the generated data set under ``root`` on first use (only under
    ``datasets/shapes`` or with ``data.shapes_generate``) and reads it as VOC.

    Raises:
        DataError: a root, split file or annotation file is missing or unusable, or a split
            is listed twice (:func:`check_distinct_entries`).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    entries = data_config.train if split == "train" else data_config.test
    if not entries:
        raise DataError(f"data.{split} names no split")
    check_distinct_entries(data_config, split)
    keep_difficult = data_config.train_difficult if split == "train" else True
    if strict is None:
        strict = data_config.on_bad_sample == "error"
    root = Path(data_config.root)
    fmt = data_config.format
    if fmt == "shapes":
        from dsod.data.shapes import DEFAULT_ROOT, ensure_shapes_dataset

        ensure_shapes_dataset(
            root,
            data_config.shapes_train_images,
            data_config.shapes_test_images,
            data_config.shapes_image_size,
            generate=data_config.shapes_generate or root.absolute() == DEFAULT_ROOT.absolute(),
        )
        fmt = "voc"
    if fmt == "voc":
        # Training and evaluation resolve a null class list from the training split first
        # (dsod.engine.from_data); here it falls back to the split's own annotations.
        names = data_config.class_names or voc_class_names(root, entries)
        return VOCDataset(root, entries, names, keep_difficult=keep_difficult, strict=strict)
    if fmt == "coco":
        if not root.is_dir():
            raise SplitNotFoundError(
                f"COCO data set root {root} (absolute: {root.absolute()}) "
                f"does not exist or is not a folder; {README_HINT}"
            )
        parts = [
            COCODataset(
                *coco_split_paths(root, entry),
                class_names=data_config.class_names,
                keep_difficult=keep_difficult,
                strict=strict,
            )
            for entry in entries
        ]
        return parts[0] if len(parts) == 1 else ConcatDetectionDataset(parts)
    raise DataError(f"unknown data.format {fmt!r}; expected voc, coco or shapes")
