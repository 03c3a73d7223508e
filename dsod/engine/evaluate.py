"""Running a detector over a test set, and scoring its detections (VOC mAP and COCO AP)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dsod.data.loader import DetectionDataset, TestSamples, collate_test, ignore_stop_signals
from dsod.engine import distributed as dist
from dsod.evaluation.coco import (annotations_to_coco, coco_from_dict, coco_image_id_map,
                                  detections_to_coco_results, evaluate_coco_with_summary,
                                  load_coco_ground_truth)
from dsod.evaluation.voc import VOCResult, evaluate_voc, format_voc_table
from dsod.runtime.compiled import compile_for_inference
from dsod.runtime.speed_paths import for_inference
from dsod.postprocess import PostProcessor
from dsod.precision import AMP_DTYPES, amp_dtype, autocast_context  # noqa: F401 (re-exported)
from dsod.structures import Detections

logger = logging.getLogger(__name__)


def channels_last_for(setting: bool | None, device: torch.device) -> bool:
    """Whether to run in the channels-last (NHWC) layout: ``train.channels_last`` when set;
    when it is None, on the CPU only. There oneDNN trains 1.2-2 times as fast in NHWC
    (DSOD and SSD300, fp32 and bf16, measured side by side) and evaluates 1.4 times as fast;
    on GPUs NCHW versus NHWC was not measured, so None keeps PyTorch's default there."""
    return device.type == "cpu" if setting is None else bool(setting)


@torch.no_grad()
def predict(model: nn.Module, dataset: DetectionDataset, samples: TestSamples,
            postprocessor: PostProcessor, device: torch.device, batch_size: int = 8,
            workers: int = 0, amp: str = "none", channels_last: bool = False,
            progress: bool = True, compile: bool = False, speed_paths: bool = True
            ) -> tuple[dict[str, Detections], list[int]]:
    """Detections for every image of ``samples`` (this process's share under DDP).

    The network runs as :class:`~dsod.inference.Detector` runs it: an eval-mode copy with
    its BNs folded (:func:`~dsod.runtime.speed_paths.for_inference` with ``speed_paths``;
    ``model`` itself is left as it is), in the channels-last layout with ``channels_last`` (see
    :func:`channels_last_for`; a DSOD300 evaluation on 2 CPU cores: 8.1 s plain, 5.8 s
    channels-last, 5.4 s with both), its weights stored in the ``amp`` dtype; with
    ``compile``, through :func:`compile_for_inference` (compiled at the first batch of each
    size).

    Returns:
        ``(image_id -> Detections in original-image pixels, unreadable image indices)``,
        gathered from all processes.
    """
    network = for_inference(model, speed_paths=speed_paths, channels_last=channels_last,
                            dtype=amp_dtype(amp))
    if compile:
        network = compile_for_inference(network)
    indices = list(range(dist.rank(), len(samples), dist.world_size()))
    loader = DataLoader(Subset(samples, indices), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_test, worker_init_fn=ignore_stop_signals)
    detections: dict[str, Detections] = {}
    unreadable: list[int] = []
    bar = tqdm(loader, desc="evaluating", unit="batch", disable=not (progress and dist.is_main_process()))
    for images, batch_indices, sizes, bad in bar:
        unreadable.extend(bad)
        if images is None:
            continue
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp):
            logits, offsets = network(images)
        for index, det in zip(batch_indices, postprocessor(logits, offsets, sizes)):
            detections[dataset.annotation(index).image_id] = det
    merged: dict[str, Detections] = {}
    all_unreadable: list[int] = []
    for part, bad in dist.all_gather_objects((detections, unreadable)):
        merged.update(part)
        all_unreadable.extend(bad)
    if all_unreadable and dist.is_main_process():
        logger.warning("%d test images could not be read and count as missed: %s",
                       len(all_unreadable), ", ".join(dataset.annotation(i).image_path
                                                      for i in sorted(all_unreadable)[:10]))
    return merged, sorted(all_unreadable)


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
                "mAP07": clean(self.voc.map07), "mAP": clean(self.voc.map),
                "iou_threshold": self.voc.iou_threshold,
                "per_class": {name: {"AP07": clean(self.voc.ap07[i]), "AP": clean(self.voc.ap[i]),
                                     "num_gt": int(self.voc.num_gt[i])}
                              for i, name in enumerate(names)},
            },
            "coco": {k: float(v) for k, v in self.coco.items()},
        }

    def report(self) -> str:
        """The per-class table and the summary lines, for printing."""
        return "\n".join([format_voc_table(self.voc),
                          f"VOC07 11-point mAP: {self.voc.map07:.4f}   "
                          f"area mAP: {self.voc.map:.4f}",
                          self.coco_summary])


def coco_id_maps(dataset: DetectionDataset) -> tuple[dict[str, int], list[int]]:
    """``(image_id -> COCO image id, category id of each label 1..C)`` for results files:
    a COCO data set's own ids, else ``1..N`` in data-set order and ``1..C``."""
    real_ids = getattr(dataset, "image_id_to_coco_id", None)
    if real_ids is not None:
        return dict(real_ids), [int(c) for c in dataset.category_ids]
    annotations = [dataset.annotation(i) for i in range(len(dataset))]
    return coco_image_id_map(annotations), list(range(1, len(dataset.class_names) + 1))


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
    return gt, coco_image_id_map(annotations), list(range(1, len(dataset.class_names) + 1))


def score(dataset: DetectionDataset, detections: Mapping[str, Detections],
          voc_tie_break: Mapping[str, np.ndarray] | None = None,
          coco_results: Sequence[Mapping[str, Any]] | None = None) -> Scores:
    """VOC (11-point and area, IoU 0.5) and COCO figures for detections on ``dataset``.

    ``voc_tie_break`` ranks equal scores for the VOC metric (see
    :func:`~dsod.evaluation.voc.evaluate_voc`; for detections read from devkit files).
    ``coco_results``, the same detections as a COCO results list (read from a results
    JSON), is scored as it is instead of converting ``detections``, so the COCO figures are
    pycocotools' own on that file."""
    annotations = [dataset.annotation(i) for i in range(len(dataset))]
    voc = evaluate_voc(annotations, detections, dataset.class_names, tie_break=voc_tie_break)
    gt, image_ids, category_ids = coco_ground_truth(dataset)
    if coco_results is None:
        coco_results = detections_to_coco_results(detections, image_ids, category_ids)
    coco, summary = evaluate_coco_with_summary(gt, coco_results)
    return Scores(voc, coco, summary)


def evaluate_model(model: nn.Module, dataset: DetectionDataset, postprocessor: PostProcessor,
                   image_size: int, mean_bgr: Sequence[float], device: torch.device,
                   batch_size: int = 8, workers: int = 0, amp: str = "none",
                   channels_last: bool = False, on_bad_sample: str = "skip",
                   speed_paths: bool = True) -> tuple[Scores | None, dict[str, Detections]]:
    """Predict on ``dataset`` and score on the main process (``None`` elsewhere)."""
    from dsod.data.transforms import TestTransform

    samples = TestSamples(dataset, TestTransform(image_size, mean_bgr), on_bad_sample)
    detections, unreadable = predict(model, dataset, samples, postprocessor, device,
                                     batch_size, workers, amp, channels_last,
                                     speed_paths=speed_paths)
    if not dist.is_main_process():
        return None, detections
    return score(dataset, detections), detections

