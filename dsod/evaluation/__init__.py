"""Detection metrics: PASCAL VOC (devkit rules) and COCO (pycocotools)."""

from .coco import (
    COCO_METRIC_NAMES,
    annotations_to_coco,
    coco_from_dict,
    detections_to_coco_results,
    evaluate_coco,
    evaluate_coco_with_summary,
    coco_image_id_map,
)
from .voc import VOCResult, evaluate_voc, format_voc_table, voc_ap
from .voc_files import plot_pr_curves, read_voc_results, write_voc_results

__all__ = [
    "COCO_METRIC_NAMES",
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
    "read_voc_results",
    "voc_ap",
    "write_voc_results",
]
