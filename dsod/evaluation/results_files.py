"""A split's detections as results files, and back: the VOC devkit's
``comp4_det_test_<class>.txt`` files and a COCO results JSON.

Writing both is what a model run of ``tools/eval.py`` leaves (:func:`write_results`);
reading either (:func:`read_voc_result_dir`, :func:`read_coco_results`) checks the
files against the split, so that results of another split or of other classes are refused
with a :class:`~dsod.data.errors.DataError` naming the file. Boxes are absolute ``xyxy``
in each image's pixels (:mod:`dsod.structures`); COCO ids are those of
:func:`~dsod.evaluation.scores.coco_id_maps`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dsod.data.base import DetectionDataset
from dsod.data.errors import DataError
from dsod.evaluation.coco import detections_to_coco_results
from dsod.evaluation.scores import coco_id_maps
from dsod.evaluation.voc_files import (
    read_voc_results_in_file_order,
    result_file_names,
    write_voc_results,
)
from dsod.structures import Detections

__all__ = ["VOC_PREFIX", "read_coco_results", "read_voc_result_dir", "write_results"]

VOC_PREFIX = "comp4_det_test_"
"""The devkit's prefix of each class's results file."""


def write_results(
    out_dir: str | Path, dataset: DetectionDataset, detections: Mapping[str, Detections]
) -> tuple[Path, Path]:
    """Write ``out_dir/voc_results/comp4_det_test_<class>.txt`` and
    ``out_dir/coco_results.json`` for ``detections`` (``image_id -> Detections``) on
    ``dataset``; returns the two paths."""
    out = Path(out_dir)
    annotations = [dataset.annotation(i) for i in range(len(dataset))]
    voc_dir = out / "voc_results"
    write_voc_results(voc_dir, annotations, detections, dataset.class_names, VOC_PREFIX)
    image_ids, category_ids = coco_id_maps(dataset)
    results = detections_to_coco_results(detections, image_ids, category_ids)
    coco_path = out / "coco_results.json"
    coco_path.write_text(json.dumps(results))
    return voc_dir, coco_path


def _check_known(
    detections: Mapping[str, Detections], dataset: DetectionDataset, source: str
) -> None:
    known = {dataset.annotation(i).image_id for i in range(len(dataset))}
    unknown = [key for key in detections if key not in known]
    if unknown:
        raise DataError(
            f"{source}: detections for {len(unknown)} image(s) that are not in the "
            f"test split, e.g. {unknown[0]!r} (results of another split?)"
        )


def read_voc_result_dir(
    directory: str | Path, dataset: DetectionDataset, prefix: str = VOC_PREFIX
) -> tuple[dict[str, Detections], dict[str, np.ndarray]]:
    """Detections from devkit results files ``<directory>/<prefix><class>.txt``, and each
    one's line position (the devkit's order for equal scores; see
    :func:`~dsod.evaluation.voc_files.read_voc_results_in_file_order`).

    Raises:
        DataError: the folder is missing, holds none of the class files, has a malformed
            line, or names images outside the test split.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"VOC results folder {directory} does not exist")
    names = list(dataset.class_names)
    parts = result_file_names(names)
    if not any((directory / f"{prefix}{part}.txt").is_file() for part in parts):
        raise DataError(
            f"VOC results folder {directory} holds no results file "
            f"{prefix}<class>.txt for any class, e.g. {prefix}{parts[0]}.txt"
        )
    try:
        detections, order = read_voc_results_in_file_order(directory, names, prefix)
    except ValueError as error:
        raise DataError(str(error)) from None
    _check_known(detections, dataset, str(directory))
    return detections, order


def read_coco_results(
    path: str | Path, dataset: DetectionDataset
) -> tuple[dict[str, Detections], list[dict[str, Any]]]:
    """Detections from a COCO results JSON (``[{"image_id", "category_id", "bbox": [x, y, w,
    h], "score"}]``); ids are mapped back as :func:`~dsod.evaluation.scores.coco_id_maps`
    assigns them. Also the checked entries as they are (only those four keys), for
    pycocotools to score exactly what the file says.

    Raises:
        DataError: the file is missing or malformed, or names an image or category the
            test split does not have.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except OSError as error:
        raise DataError(f"cannot read COCO results {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise DataError(f"COCO results {path} is not valid JSON: {error}") from None
    if not isinstance(entries, list):
        raise DataError(f"COCO results {path}: expected a list of detections at the top level")
    image_ids, category_ids = coco_id_maps(dataset)
    image_of = {coco_id: image_id for image_id, coco_id in image_ids.items()}
    label_of = {cat: label for label, cat in enumerate(category_ids, start=1)}
    per_image: dict[str, tuple[list, list, list]] = {}
    checked: list[dict[str, Any]] = []
    for number, entry in enumerate(entries):
        try:
            coco_image, category = entry["image_id"], entry["category_id"]
            x, y, w, h = (float(v) for v in entry["bbox"])
            value = float(entry["score"])
            if not all(math.isfinite(v) for v in (x, y, w, h, value)):
                raise ValueError("non-finite number")
        except (TypeError, KeyError, ValueError) as error:
            raise DataError(
                f"COCO results {path}: entry {number} is not "
                f'{{"image_id", "category_id", "bbox": [x, y, w, h], "score"}}: '
                f"{str(entry)[:100]} ({type(error).__name__}: {error})"
            ) from None
        image_id = image_of.get(coco_image)
        if image_id is None:
            raise DataError(
                f"COCO results {path}: entry {number} names image id {coco_image!r}, "
                f"which is not in the test split (on a VOC-layout data set image "
                f"ids are 1..{len(dataset)} in test-split order)"
            )
        if category not in label_of:
            raise DataError(
                f"COCO results {path}: entry {number} names category id "
                f"{category!r}; the test split has {category_ids}"
            )
        boxes, scores, labels = per_image.setdefault(image_id, ([], [], []))
        boxes.append((x, y, x + w, y + h))
        scores.append(value)
        labels.append(label_of[category])
        checked.append(
            {"image_id": coco_image, "category_id": category, "bbox": [x, y, w, h], "score": value}
        )
    detections = {
        image_id: Detections(
            np.asarray(b, np.float64).reshape(-1, 4),
            np.asarray(s, np.float64),
            np.asarray(lab, np.int64),
        )
        for image_id, (b, s, lab) in per_image.items()
    }
    return detections, checked
