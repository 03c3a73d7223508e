"""Predicting a split: a model's detections on every image of a data set, as the trainer's
evaluations and ``tools/eval.py`` both take them (:func:`predict_split`)."""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dsod.config import Config
from dsod.data.base import DetectionDataset
from dsod.data.loader import TestSamples, collate_test, ignore_stop_signals
from dsod.data.transforms import TestTransform
from dsod.engine import distributed as dist
from dsod.engine.builders import build_postprocessor
from dsod.runtime.network import RunSettings, prepare_network
from dsod.structures import Detections

__all__ = ["Predictions", "predict_split"]

logger = logging.getLogger(__name__)


class Predictions(NamedTuple):
    """A model's detections on a split.

    Attributes:
        detections: ``image_id -> Detections``: absolute ``xyxy`` boxes in the image's own
            pixels, scores, labels ``1..C``, after the config's post-processing.
        unreadable: the data-set indices of the images that could not be read (sorted);
            they have no entry, so their objects count as missed.
    """

    detections: dict[str, Detections]
    unreadable: list[int]


@torch.no_grad()
def predict_split(
    model: nn.Module,
    dataset: DetectionDataset,
    config: Config,
    settings: RunSettings,
    *,
    compile: bool = False,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Predictions:
    """Detections of ``model`` on every image of ``dataset``.

    The model runs as inference runs it (:func:`~dsod.runtime.network.prepare_network`: an
    eval-mode copy, BNs folded, ``settings``' device, precision and layout; ``compile``:
    ``torch.compile`` with frozen weights); ``model`` itself is left as it is. Images are
    read and resized as at test time (``model.input_size``, ``augment.mean_bgr``; an
    unreadable one is skipped or, with ``data.on_bad_sample: error``, stops the run) and the
    outputs decoded and suppressed with the config's ``test`` settings. Under DDP each
    process predicts its share and every process gets all of them.

    Args:
        model: ``images [B, 3, S, S] -> (logits [B, P, C+1], offsets [B, P, 4])``.
        dataset: the split.
        config: the config the model was built from.
        settings: where and how the network runs.
        batch_size: images per batch; default ``test.batch_size``.
        workers: image-loading processes; default ``data.workers``.
        progress: show a progress bar (main process).
    """
    network = prepare_network(model, settings, training=False, compile=compile)
    samples = TestSamples(
        dataset,
        TestTransform(config.model.input_size, config.augment.mean_bgr),
        config.data.on_bad_sample,
    )
    postprocessor = build_postprocessor(config)
    indices = list(range(dist.rank(), len(samples), dist.world_size()))
    loader = DataLoader(
        Subset(samples, indices),
        batch_size=batch_size or config.test.batch_size,
        num_workers=config.data.workers if workers is None else workers,
        collate_fn=collate_test,
        worker_init_fn=ignore_stop_signals,
    )
    detections: dict[str, Detections] = {}
    unreadable: list[int] = []
    bar = tqdm(
        loader, desc="evaluating", unit="batch", disable=not (progress and dist.is_main_process())
    )
    for images, batch_indices, sizes, bad in bar:
        unreadable.extend(bad)
        if images is None:
            continue
        logits, offsets = network.run(images)
        for index, det in zip(batch_indices, postprocessor(logits, offsets, sizes)):
            detections[dataset.annotation(index).image_id] = det
    merged: dict[str, Detections] = {}
    all_unreadable: list[int] = []
    for part, bad in dist.all_gather_objects((detections, unreadable)):
        merged.update(part)
        all_unreadable.extend(bad)
    if all_unreadable and dist.is_main_process():
        logger.warning(
            "%d test images could not be read and count as missed: %s",
            len(all_unreadable),
            ", ".join(dataset.annotation(i).image_path for i in sorted(all_unreadable)[:10]),
        )
    return Predictions(merged, sorted(all_unreadable))
