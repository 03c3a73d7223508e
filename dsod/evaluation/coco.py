"""COCO box AP through pycocotools, from the package's in-memory records.

Boxes are internal absolute ``xyxy`` (continuous pixels, see :mod:`dsod.structures`); COCO
wants ``[x, y, w, h]`` in the same continuous pixels, so the conversion is
``[x1, y1, x2 - x1, y2 - y1]`` with no ``+1``.

Difficult boxes become ``iscrowd = 1`` ground truths so COCOeval ignores them, the nearest
COCO equivalent of VOC's "difficult": they are not counted as positives and detections
matched to them are neither TP nor FP. (COCOeval matches crowd boxes by intersection over
the detection's area rather than IoU, and lets several detections match one crowd box, so
this is close to, not identical with, VOC's rule.)
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from dsod.config.labels import object_labels
from dsod.structures import Annotation, Detections

logger = logging.getLogger(__name__)

#: Names of the 12 numbers of ``COCOeval.summarize()`` for boxes, in its order.
COCO_METRIC_NAMES: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def coco_image_id_map(annotations: Sequence[Annotation]) -> dict[str, int]:
    """``image_id -> integer COCO image id`` as :func:`annotations_to_coco` assigns them
    (``1..N`` in the order of ``annotations``)."""
    return {ann.image_id: i for i, ann in enumerate(annotations, start=1)}


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def annotations_to_coco(
    annotations: Sequence[Annotation],
    class_names: Sequence[str],
    category_ids: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Build an in-memory COCO ground-truth dataset dict.

    Args:
        annotations: ground truth (boxes internal ``xyxy``, labels ``1..C``).
        class_names: the ``C`` class names.
        category_ids: COCO category id of each label (label ``l`` -> ``category_ids[l - 1]``);
            default ``1..C``.

    Returns:
        ``{"info", "images", "categories", "annotations"}``: images get ids ``1..N`` in
        order (see :func:`coco_image_id_map`; ``file_name`` is the image path, ``dsod_image_id``
        the original id); each box gets ``bbox = [x, y, w, h]``, ``area = w * h``,
        ``iscrowd = 1`` if difficult else 0 (see module docstring) and a unique id ``1..M``.
    """
    cat_ids = list(object_labels(len(class_names))) if category_ids is None else list(category_ids)
    if len(cat_ids) != len(class_names):
        raise ValueError(f"{len(cat_ids)} category ids for {len(class_names)} classes")
    images, anns = [], []
    for image_index, ann in enumerate(annotations, start=1):
        images.append(
            {
                "id": image_index,
                "file_name": ann.image_path,
                "width": int(ann.width),
                "height": int(ann.height),
                "dsod_image_id": ann.image_id,
            }
        )
        labels = np.asarray(ann.labels, dtype=np.int64)
        if labels.size and (labels.min() < 1 or labels.max() > len(cat_ids)):
            raise ValueError(f"image {ann.image_id!r}: labels must be in 1..{len(cat_ids)}")
        difficult = np.asarray(ann.difficult, dtype=bool).reshape(-1)
        for (x, y, w, h), label, crowd in zip(
            _xyxy_to_xywh(ann.boxes).tolist(), labels.tolist(), difficult.tolist()
        ):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_index,
                    "category_id": cat_ids[label - 1],
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
    categories = [
        {"id": int(cid), "name": str(name), "supercategory": "object"}
        for cid, name in zip(cat_ids, class_names)
    ]
    return {
        "info": {"description": "dsod ground truth"},
        "images": images,
        "categories": categories,
        "annotations": anns,
    }


def coco_from_dict(dataset: Mapping[str, Any]) -> COCO:
    """A ``pycocotools`` COCO object over an in-memory dataset dict (no file, no prints).

    The dict is deep-copied so later changes to it do not reach the index.
    """
    return _index(copy.deepcopy(dict(dataset)))


def _index(dataset: dict[str, Any]) -> COCO:
    """A COCO object indexing ``dataset`` itself (not a copy), without its prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def load_coco_ground_truth(*paths: str | Path) -> COCO:
    """pycocotools ground truth from one or more instances JSONs, as ``COCO(path)`` reads
    one, with the fields ``COCOeval`` needs filled in where a converter left them out:
    ``iscrowd`` 0 and ``area`` the bbox's ``w * h``; annotations without a usable ``bbox``
    (segmentation only) are left out, since ``COCOeval`` cannot score them. A warning counts
    each change; a complete file (every official one) is used as it is.

    Several files (a test split of several COCO JSONs) are merged: their images and
    annotations (renumbered ``1..N``, as ids may repeat across files) under the first
    file's categories, which all must share. Their image ids must not repeat.

    Raises:
        ValueError: a file is not a JSON object with ``images``, ``categories`` and
            ``annotations`` lists, or the files differ in categories (names the file).
    """
    if not paths:
        raise ValueError("load_coco_ground_truth needs at least one file")
    parts = [_read_ground_truth(Path(path)) for path in paths]
    if len(parts) == 1:
        return _index(parts[0])
    merged = {**parts[0], "images": [], "annotations": []}
    category_ids = sorted(c.get("id") for c in parts[0]["categories"])
    for path, part in zip(paths, parts):
        if sorted(c.get("id") for c in part["categories"]) != category_ids:
            raise ValueError(f"COCO ground truth {path}: other category ids than {paths[0]}")
        merged["images"] += part["images"]
        merged["annotations"] += part["annotations"]
    for number, annotation in enumerate(merged["annotations"], start=1):
        annotation["id"] = number
    return _index(merged)


def _read_ground_truth(path: Path) -> dict[str, Any]:
    """One instances JSON as a dict, completed for COCOeval (see
    :func:`load_coco_ground_truth`)."""
    with open(path, "rb") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(key), list) for key in ("images", "categories", "annotations")
    ):
        raise ValueError(
            f"COCO ground truth {path}: expected a JSON object with images, "
            f"categories and annotations lists"
        )
    changed: Counter[str] = Counter()
    kept = []
    for annotation in data["annotations"]:
        bbox = annotation.get("bbox") if isinstance(annotation, dict) else None
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) for v in bbox)
        ):
            changed["without a usable bbox, left out"] += 1
            continue
        if "iscrowd" not in annotation:
            annotation["iscrowd"] = 0
            changed["without iscrowd, taken as 0"] += 1
        if "area" not in annotation:
            annotation["area"] = float(bbox[2]) * float(bbox[3])
            changed["without area, taken as the bbox's w * h"] += 1
        kept.append(annotation)
    data["annotations"] = kept
    for what, count in changed.items():
        logger.warning("COCO ground truth %s: %d annotation(s) %s", path, count, what)
    _number_afresh_if_repeated(path, kept)
    return data


def _number_afresh_if_repeated(path: Path, annotations: list[dict[str, Any]]) -> None:
    """Give ``annotations`` the ids ``1..N`` when some share an id or have none, with a
    warning: pycocotools keeps one annotation per id, so the others would be lost to the
    evaluation (a box replaced by another, and perfect detections scored below 1)."""
    ids = [a.get("id") for a in annotations]
    usable = all(isinstance(i, (int, float, str)) and not isinstance(i, bool) for i in ids)
    if usable and len(set(ids)) == len(ids):
        return
    counts = Counter(repr(i) for i in ids if i is not None)
    repeated = {number: count for number, count in counts.items() if count > 1}
    shown = ", ".join(list(repeated)[:5])
    missing = sum(1 for i in ids if i is None)
    logger.warning(
        "COCO ground truth %s: %d annotation id(s) are each used by more than "
        "one box (%d boxes)%s%s; the boxes are numbered afresh for scoring, so "
        "that each one counts",
        path,
        len(repeated),
        sum(repeated.values()),
        f", e.g. {shown}" if shown else "",
        f", and {missing} box(es) have no id" if missing else "",
    )
    for number, annotation in enumerate(annotations, start=1):
        annotation["id"] = number


def detections_to_coco_results(
    detections: Mapping[str, Detections],
    image_id_map: Mapping[str, int | str],
    category_ids: Sequence[int],
) -> list[dict[str, Any]]:
    """Convert detections to the COCO results JSON format.

    Args:
        detections: ``image_id -> Detections`` (boxes internal ``xyxy``, labels ``1..C``).
        image_id_map: ``image_id -> COCO image id`` (as the ground truth has it: usually an
            integer, a string in some data sets).
        category_ids: label ``l`` maps to ``category_ids[l - 1]``.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` with box values
        rounded to 2 decimals and scores to 6.
    """
    cat_ids = np.asarray(list(category_ids), dtype=np.int64)
    results: list[dict[str, Any]] = []
    for key, det in detections.items():
        if len(det) == 0:
            continue
        if key not in image_id_map:
            raise KeyError(f"image id {key!r} is not in image_id_map")
        coco_image = image_id_map[key]
        if isinstance(coco_image, np.integer):
            coco_image = int(coco_image)  # JSON-ready; string ids stay strings
        labels = np.asarray(det.labels, dtype=np.int64)
        if labels.min() < 1 or labels.max() > cat_ids.size:
            raise ValueError(f"image {key!r}: labels must be in 1..{cat_ids.size}")
        boxes = np.round(_xyxy_to_xywh(det.boxes), 2).tolist()
        scores = np.round(np.asarray(det.scores, dtype=np.float64), 6).tolist()
        for box, cat, score in zip(boxes, cat_ids[labels - 1].tolist(), scores):
            results.append(
                {"image_id": coco_image, "category_id": cat, "bbox": box, "score": score}
            )
    return results


def evaluate_coco_with_summary(
    coco_gt: COCO, results: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, float], str]:
    """Run COCOeval (boxes) and return its 12 stats by name plus its printed summary.

    Stats are pycocotools' own, so ``-1`` marks an area range without ground truth; an
    empty ``results`` list (which ``loadRes`` cannot take) is scored as an empty result
    set: 0 wherever there is ground truth. ``results`` is not modified (``loadRes`` edits
    the dicts it gets).
    """
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        if len(results) == 0:  # loadRes cannot take an empty list: an empty result set
            coco_dt = _index(
                {
                    "images": list(coco_gt.dataset.get("images", [])),
                    "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
                    "annotations": [],
                }
            )
        else:
            try:
                coco_dt = coco_gt.loadRes([dict(r) for r in results])
            except AssertionError as err:
                raise ValueError(f"pycocotools rejected the results: {err}") from err
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    stats = {name: float(v) for name, v in zip(COCO_METRIC_NAMES, evaluator.stats)}
    return stats, summary.getvalue().rstrip("\n")


def evaluate_coco(coco_gt: COCO, results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The 12 ``COCOeval.summarize()`` box stats by name (:data:`COCO_METRIC_NAMES`):
    AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl. Empty results -> zeros."""
    return evaluate_coco_with_summary(coco_gt, results)[0]
