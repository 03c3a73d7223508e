"""MS COCO "instances" annotation files.

COCO category ids are not contiguous (1..90 for 80 classes). Labels here are ``1..C`` with
``category_ids[l - 1]`` the COCO id of label ``l``, to write results back. COCO boxes
``[x, y, w, h]`` are already continuous pixel coordinates: ``xyxy = (x, y, x + w, y + h)``.
Crowd regions (``iscrowd: 1``) are kept as boxes flagged ``Annotation.difficult``.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsod.config.class_names import class_key, clean_class_name, find_clashes
from dsod.data.base import README_HINT, DetectionDataset, check_class_names
from dsod.data.errors import (
    AnnotationError,
    DataError,
    ImageReadError,
    Problem,
    SplitNotFoundError,
)
from dsod.data.image_io import read_image_size
from dsod.structures import Annotation

# A box may reach this far past the image border (COCO's float rounding) before it is
# reported; it is clipped either way.
_CLIP_TOLERANCE = 1.0


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise SplitNotFoundError(
            f"the COCO annotation file {path} does not exist; {README_HINT}"
        ) from None
    except OSError as error:
        raise AnnotationError(path, error.strerror or str(error)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(path, f"malformed JSON: {error}") from None
    if not isinstance(data, dict):
        raise AnnotationError(
            path, "expected a JSON object with images, annotations and categories"
        )
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(path, f"no {key!r} list")
    if not isinstance(data.get("annotations", []), list):
        raise AnnotationError(path, "'annotations' is not a list")
    return data


def _integer_id(value: Any) -> int | None:
    """A COCO category id as an int: an int, or a float with an integral value (``1.0``, as
    pandas-based converters write them; pycocotools compares them equal); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _image_id(value: Any) -> int | str | None:
    """An image id as pycocotools reads it: a string, or an integer as :func:`_integer_id`
    reads one (``1.0`` included); None for anything else."""
    return value if isinstance(value, str) else _integer_id(value)


def _categories(
    path: Path, data: dict[str, Any], class_names: Sequence[str] | None
) -> tuple[tuple[str, ...], tuple[int, ...], list[str]]:
    """``(class_names, category_ids, notes)``; label ``l`` is category
    ``category_ids[l - 1]``. Names are cleaned
    (:func:`~dsod.config.class_names.clean_class_name`); given ``class_names`` match the
    JSON's names up to case and spacing, and ``notes`` says where they are spelled
    otherwise.

    Raises:
        AnnotationError: a category lacks an integer id or a name, two share an id, or two
            name one class (the same name, or names that differ only in case or spacing:
            their boxes would be two classes that print alike; the message names them, their
            ids and how many boxes each has).
        DataError: ``class_names`` are not the JSON's names.
    """
    cats = []
    for category in data["categories"]:
        number = _integer_id(category.get("id")) if isinstance(category, dict) else None
        if number is None or "name" not in category:
            raise AnnotationError(
                path, f"category {str(category)[:80]} lacks an integer id or a name"
            )
        cats.append((number, clean_class_name(str(category["name"]))))
    cats.sort(key=lambda c: c[0])
    if not cats:
        raise AnnotationError(path, "the categories list is empty")
    ids = [c[0] for c in cats]
    if len(set(ids)) != len(ids):
        raise AnnotationError(path, "two categories share an id")
    json_names = [c[1] for c in cats]
    clashes = find_clashes(json_names)
    if clashes:
        boxes = Counter(
            _integer_id(a.get("category_id"))
            for a in data.get("annotations", [])
            if isinstance(a, dict)
        )
        groups = "; ".join(
            " and ".join(
                f"{name!r} (id {number}, {boxes[number]} boxes)"
                for number, name in cats
                if name in group
            )
            for group in (set(g) for g in clashes)
        )
        raise AnnotationError(
            path,
            f"categories name one class more than once: {groups}; "
            f"names that differ only in case or spacing are one "
            f"class: merge them into one category (one id) in the JSON",
        )
    if class_names is None:
        return tuple(json_names), tuple(ids), []
    names = check_class_names(class_names)
    json_of = {class_key(n): n for n in json_names}
    missing = [n for n in names if class_key(n) not in json_of]
    wanted = {class_key(n) for n in names}
    extra = [n for n in json_names if class_key(n) not in wanted]
    if missing or extra:
        raise DataError(
            f"data.class_names does not match the categories of {path}: "
            f"not in the JSON: {missing or 'none'}; in the JSON but not in "
            f"data.class_names: {extra or 'none'}"
        )
    by_name = dict(zip(json_names, ids))
    notes = [
        f"category {json_of[class_key(n)]!r} is counted as data.class_names' {n!r} "
        f"(names that differ only in case or spacing are one class)"
        for n in names
        if json_of[class_key(n)] != n
    ]
    return names, tuple(by_name[json_of[class_key(n)]] for n in names), notes


def repeated_annotation_ids(annotations: Sequence[Any]) -> dict[Any, int]:
    """``id -> count`` of the annotation ids that more than one annotation of a COCO file
    uses (pycocotools indexes annotations by id: all but one of them would be lost)."""
    counts = Counter(
        a["id"]
        for a in annotations
        if isinstance(a, dict) and isinstance(a.get("id"), (int, float, str))
    )
    return {number: count for number, count in counts.items() if count > 1}


def describe_repeated_ids(repeated: dict[Any, int]) -> str:
    """``2 annotation ids are each used by more than one box (5 boxes), e.g. 4, 9``."""
    shown = ", ".join(str(n) for n in list(repeated)[:5])
    return (
        f"{len(repeated)} annotation id(s) are each used by more than one box "
        f"({sum(repeated.values())} boxes), e.g. {shown}"
    )


def coco_class_names(annotation_json: str | Path) -> tuple[str, ...]:
    """The category names of a COCO instances JSON, in category-id order (the labels
    ``1..C`` that :class:`COCODataset` gives them without ``class_names``)."""
    path = Path(annotation_json)
    return _categories(path, _load_json(path), None)[0]


class COCODataset(DetectionDataset):
    """One COCO instances JSON and its image folder, parsed once at construction.

    Args:
        annotation_json: e.g. ``annotations/instances_val2017.json``.
        image_dir: the folder the images' ``file_name`` are relative to.
        class_names: None takes the names from the JSON, labels in order of category id;
            given, they must be the JSON's names (any order; up to case and spacing, with a
            ``class_variant`` warning), and label ``l`` is ``class_names[l - 1]``.
        keep_difficult: False leaves crowd boxes out of ``training_targets`` and ``load``.
        strict: raise on the first image without a usable size instead of leaving it out.

    Attributes:
        category_ids: ``category_ids[l - 1]`` is the COCO category id of label ``l``.
        image_id_to_coco_id: ``Annotation.image_id`` (a string) -> the JSON's image id.
        problems: every :class:`Problem` found (boxes dropped or clipped, ...).

    Images without boxes are kept. ``image_id`` is ``str(coco image id)``.

    Raises:
        DataError: the JSON is missing or malformed, or class_names do not match it.
    """

    def __init__(
        self,
        annotation_json: str | Path,
        image_dir: str | Path,
        class_names: Sequence[str] | None = None,
        keep_difficult: bool = True,
        strict: bool = False,
    ) -> None:
        path = Path(annotation_json)
        image_dir = Path(image_dir)
        data = _load_json(path)
        names, category_ids, notes = _categories(path, data, class_names)
        label_of = {cid: label for label, cid in enumerate(category_ids, start=1)}
        file = str(path)
        problems: list[Problem] = [
            Problem(file, note, "warning", "class_variant") for note in notes
        ]

        images: dict[Any, dict[str, Any]] = {}
        for entry in data["images"]:
            coco_id = _image_id(entry.get("id")) if isinstance(entry, dict) else None
            if coco_id is None or "file_name" not in entry:
                shown = (
                    {k: entry.get(k) for k in ("id", "file_name")}
                    if isinstance(entry, dict)
                    else str(entry)[:80]
                )
                problems.append(
                    Problem(
                        file,
                        f"image entry {shown} lacks an id or file_name; skipped",
                        "warning",
                        "bad_field",
                    )
                )
            elif coco_id in images:
                problems.append(
                    Problem(
                        file,
                        f"image id {coco_id} appears twice; the second is skipped",
                        "warning",
                        "duplicate",
                    )
                )
            else:
                images[coco_id] = entry

        ids_of_file: dict[str, list[Any]] = defaultdict(list)
        for coco_id, entry in images.items():
            ids_of_file[str(entry["file_name"])].append(coco_id)
        for file_name, ids in ids_of_file.items():
            if len(ids) > 1:
                problems.append(
                    Problem(
                        file,
                        f"image file {file_name} is listed under "
                        f"{len(ids)} ids ({', '.join(map(str, ids))}): "
                        f"it is trained and scored once per id",
                        "warning",
                        "duplicate",
                    )
                )
        repeated = repeated_annotation_ids(data.get("annotations", []))
        if repeated:
            problems.append(
                Problem(
                    file,
                    f"{describe_repeated_ids(repeated)}; every box is "
                    f"kept, and the COCO evaluation numbers them afresh "
                    f"(pycocotools would keep one box per id)",
                    "warning",
                    "duplicate",
                )
            )
        per_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for ann in data.get("annotations", []):
            if not isinstance(ann, dict):
                problems.append(
                    Problem(
                        file,
                        f"annotation {str(ann)[:80]} is not an object; skipped",
                        "warning",
                        "bad_field",
                    )
                )
                continue
            image_id = _image_id(ann.get("image_id"))
            if image_id is None or image_id not in images:
                problems.append(
                    Problem(
                        file,
                        f"annotation {ann.get('id', '(no id)')!r} refers "
                        f"to image id {ann.get('image_id')!r}, which the "
                        f"images list does not hold; skipped",
                        "warning",
                        "bad_field",
                    )
                )
            else:
                per_image[image_id].append({**ann, "image_id": image_id})

        annotations: list[Annotation] = []
        self.image_id_to_coco_id: dict[str, Any] = {}
        for coco_id, entry in images.items():
            image_path = image_dir / str(entry["file_name"])
            try:
                width, height = self._size(entry, image_path, problems)
            except ImageReadError as error:
                if strict:
                    raise
                reason = error.reason or str(error)
                problems.append(
                    Problem(
                        str(image_path),
                        f"image {coco_id} has no usable size "
                        f"in {path.name} and {reason}; image left out",
                        "error",
                        "missing_image",
                    )
                )
                continue
            boxes, labels, crowd = [], [], []
            for ann in per_image.get(coco_id, []):
                box = self._box(ann, width, height, label_of, file, problems)
                if box is not None:
                    boxes.append(box)
                    labels.append(label_of[_integer_id(ann["category_id"])])
                    crowd.append(bool(ann.get("iscrowd", 0)))
            annotations.append(
                Annotation(
                    image_id=str(coco_id),
                    image_path=str(image_path),
                    width=width,
                    height=height,
                    boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    labels=np.asarray(labels, dtype=np.int64),
                    difficult=np.asarray(crowd, bool),
                )
            )
            self.image_id_to_coco_id[str(coco_id)] = coco_id
        super().__init__(names, annotations, problems, keep_difficult)
        self.category_ids: tuple[int, ...] = category_ids
        self.has_annotations = "annotations" in data  # a test set without them cannot be scored
        self.annotation_json = path
        self.image_dir = image_dir

    @staticmethod
    def _size(entry: dict[str, Any], image_path: Path, problems: list[Problem]) -> tuple[int, int]:
        """The image's ``(width, height)`` from the JSON, else from the image file."""
        width, height = entry.get("width"), entry.get("height")
        if (
            isinstance(width, (int, float))
            and isinstance(height, (int, float))
            and width >= 1
            and height >= 1
            and width == int(width)
            and height == int(height)
        ):
            return int(width), int(height)
        width, height = read_image_size(image_path)
        problems.append(
            Problem(
                str(image_path),
                f"image {entry['id']} has no usable width/"
                f"height in the JSON; took {width}x{height} from the file",
                "warning",
                "missing_size",
            )
        )
        return width, height

    @staticmethod
    def _box(
        ann: dict[str, Any],
        width: int,
        height: int,
        label_of: dict[int, int],
        file: str,
        problems: list[Problem],
    ) -> list[float] | None:
        """The clipped ``xyxy`` box of one COCO annotation, or None (problem recorded)."""
        where = f"annotation {ann.get('id', '?')} (image {ann['image_id']})"
        category = _integer_id(ann.get("category_id"))
        if category not in label_of:
            problems.append(
                Problem(
                    file,
                    f"{where}: unknown category_id {ann.get('category_id')!r}; box dropped",
                    "warning",
                    "unknown_class",
                )
            )
            return None
        bbox = ann.get("bbox")
        if not (
            isinstance(bbox, (list, tuple))
            and len(bbox) == 4
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in bbox
            )
        ):
            problems.append(
                Problem(
                    file,
                    f"{where}: bbox {bbox!r} is not 4 numbers; box dropped",
                    "warning",
                    "bad_coordinates",
                )
            )
            return None
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            problems.append(
                Problem(
                    file,
                    f"{where}: bbox [x, y, w, h] = {bbox} has zero or negative size; box dropped",
                    "warning",
                    "zero_size_box",
                )
            )
            return None
        box = [x, y, x + w, y + h]
        clipped = [
            min(max(box[0], 0.0), width),
            min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width),
            min(max(box[3], 0.0), height),
        ]
        if not (
            np.float32(clipped[2]) > np.float32(clipped[0])
            and np.float32(clipped[3]) > np.float32(clipped[1])
        ):
            problems.append(
                Problem(
                    file,
                    f"{where}: bbox {bbox} lies outside the {width}x{height} image; box dropped",
                    "warning",
                    "box_outside",
                )
            )
            return None
        if max(abs(a - b) for a, b in zip(box, clipped)) > _CLIP_TOLERANCE:
            problems.append(
                Problem(
                    file,
                    f"{where}: bbox {bbox} reaches outside the {width}x{height} image; clipped",
                    "warning",
                    "box_clipped",
                )
            )
        return clipped
