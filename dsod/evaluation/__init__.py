"""Detection metrics: PASCAL VOC (devkit rules) and COCO (pycocotools), the figures of a
split (:mod:`~dsod.evaluation.scores`) and results files (:mod:`~dsod.evaluation.voc_files`,
:mod:`~dsod.evaluation.results_files`)."""

from .coco import (
    COCO_METRIC_NAMES,
    annotations_to_coco,
    coco_from_dict,
    coco_image_id_map,
    detections_to_coco_results,
    evaluate_coco,
    evaluate_coco_with_summary,
)
from .results_files import read_coco_results, read_voc_result_dir, write_results
from .scores import Scores, score_detections
from .voc import VOCResult, evaluate_voc, format_voc_table, voc_ap
from .voc_files import plot_pr_curves, read_voc_results, write_voc_results

__all__ = [
    "COCO_METRIC_NAMES",
    "Scores",
    "VOCResult",
    "annotations_to_coco",
    "coco_from_dict",
    "detections_to_coco_results",
    "evaluate_coco",
    "evaluate_coco_with_summary",
    "evaluate_voc",
    "format_voc_table",
    "coco_image_id_map",
    "plot_pr_curves",
    "read_coco_results",
    "read_voc_result_dir",
    "read_voc_results",
    "score_detections",
    "voc_ap",
    "write_results",
    "write_voc_results",
]
