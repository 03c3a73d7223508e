"""The figures of one split: VOC AP (11-point and area, IoU 0.5) and COCO AP of
detections on a data set, with the COCO ids results files use.

:func:`score_detections` is what the trainer's evaluations and ``tools/eval.py`` score
with; :class:`Scores` holds the figures, as a table and as JSON-ready numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsod.config.labels import object_labels
from dsod.data.base import DetectionDataset
from dsod.evaluation.coco import (
    annotations_to_coco,
    coco_from_dict,
    coco_image_id_map,
    detections_to_coco_results,
    evaluate_coco_with_summary,
    load_coco_ground_truth,
)
from dsod.evaluation.voc import VOCResult, evaluate_voc, format_voc_table
from dsod.structures import Detections

__all__ = ["Scores", "coco_ground_truth", "coco_id_maps", "score_detections"]


@dataclass
class Scores:
    """All figures of one evaluation."""

    voc: VOCResult
    coco: dict[str, float]
    coco_summary: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready numbers (NaN becomes ``None``)."""

        def clean(value: float) -> float | None:
            return None if math.isnan(value) else float(value)

        names = self.voc.class_names
        return {
            "voc": {
                "mAP07": clean(self.voc.map07),
                "mAP": clean(self.voc.map),
                "iou_threshold": self.voc.iou_threshold,
                "per_class": {
                    name: {
                        "AP07": clean(self.voc.ap07[i]),
                        "AP": clean(self.voc.ap[i]),
                        "num_gt": int(self.voc.num_gt[i]),
                    }
                    for i, name in enumerate(names)
                },
            },
            "coco": {k: float(v) for k, v in self.coco.items()},
        }

    def report(self) -> str:
        """The per-class table and the summary lines, for printing."""
        return "\n".join(
            [
                format_voc_table(self.voc),
                f"VOC07 11-point mAP: {self.voc.map07:.4f}   area mAP: {self.voc.map:.4f}",
                self.coco_summary,
            ]
        )


def coco_id_maps(dataset: DetectionDataset) -> tuple[dict[str, int], list[int]]:
    """``(image_id -> COCO image id, category id of each label 1..C)`` for results files:
    a COCO data set's own ids, else ``1..N`` in data-set order and ``1..C``."""
    real_ids = getattr(dataset, "image_id_to_coco_id", None)
    if real_ids is not None:
        return dict(real_ids), [int(c) for c in dataset.category_ids]
    annotations = [dataset.annotation(i) for i in range(len(dataset))]
    return coco_image_id_map(annotations), list(object_labels(len(dataset.class_names)))


def coco_ground_truth(dataset: DetectionDataset) -> tuple[Any, dict[str, int], list[int]]:
    """pycocotools ground truth for a data set: a COCO data set's own annotation files
    (several merged, for a split of several), or the VOC annotations converted in memory.
    Returns ``(COCO, image_id -> coco id, category ids)``."""
    parts = getattr(dataset, "parts", None) or (dataset,)
    files = [getattr(part, "annotation_json", None) for part in parts]
    if all(file is not None for file in files):  # the official files, as pycocotools reads them
        return (load_coco_ground_truth(*files), *coco_id_maps(dataset))
    annotations = [dataset.annotation(i) for i in range(len(dataset))]
    gt = coco_from_dict(annotations_to_coco(annotations, dataset.class_names))
    return gt, coco_image_id_map(annotations), list(object_labels(len(dataset.class_names)))


def score_detections(
    dataset: DetectionDataset,
    detections: Mapping[str, Detections],
    voc_tie_break: Mapping[str, np.ndarray] | None = None,
    coco_results: Sequence[Mapping[str, Any]] | None = None,
) -> Scores:
    """VOC (11-point and area, IoU 0.5) and COCO figures for detections on ``dataset``.

    Args:
        dataset: the split scored; its annotations are the ground truth.
        detections: ``image_id -> Detections`` (absolute ``xyxy`` in each image's pixels,
            labels ``1..C``); an image without an entry detected nothing.
        voc_tie_break: ranks equal scores for the VOC metric (see
            :func:`~dsod.evaluation.voc.evaluate_voc`; for detections read from devkit
            files).
        coco_results: the same detections as a COCO results list (read from a results
            JSON), scored as it is instead of converting ``detections``, so the COCO figures
            are pycocotools' own on that file.
    """
    annotations = [dataset.annotation(i) for i in range(len(dataset))]
    voc = evaluate_voc(annotations, detections, dataset.class_names, tie_break=voc_tie_break)
    gt, image_ids, category_ids = coco_ground_truth(dataset)
    if coco_results is None:
        coco_results = detections_to_coco_results(detections, image_ids, category_ids)
    coco, summary = evaluate_coco_with_summary(gt, coco_results)
    return Scores(voc, coco, summary)
