"""Everything around the network: post-processing, the training data pipeline, VOC scoring."""

from __future__ import annotations

import dataclasses
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.common import BenchOptions, median, time_runs, torch_threads
from dsod.config import Config
from dsod.config.labels import with_background
from dsod.data.image_io import read_image
from dsod.data.transforms import TrainTransform
from dsod.data.voc import VOCDataset
from dsod.engine.builders import build_postprocessor, build_priors, build_training_samples
from dsod.evaluation.voc import evaluate_voc
from dsod.structures import Annotation, Detections

BCCD_CLASSES = ("RBC", "WBC", "Platelets")
SYNTHETIC_CLASSES = ("cell", "blob", "dot")


def trained_like_outputs(
    num_priors: int,
    num_classes: int,
    batch: int,
    objects: int = 6,
    priors_per_object: int = 12,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw outputs shaped like a trained detector's: ``(logits [B, P, C+1], offsets [B, P, 4])``.

    Background logits ~ N(8, 1) and class logits ~ N(0, 1), so most priors are confidently
    background and about 1% of (prior, class) pairs pass the 0.01 score threshold (the thin
    tail of a trained model); ``objects`` per image get ``priors_per_object`` priors each
    with one class at probability 0.4-0.99. Untrained (uniform) logits would put every prior
    of every class over the threshold and time a worst case that never occurs.
    """
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, num_priors, num_classes, generator=generator)
    logits[..., 0] += 8.0
    for b in range(batch):
        for _ in range(objects):
            label = int(torch.randint(1, num_classes, (1,), generator=generator))
            first = int(
                torch.randint(0, num_priors - priors_per_object, (1,), generator=generator)
            )
            rows = slice(first, first + priors_per_object)
            confidence = torch.rand(priors_per_object, generator=generator) * 0.59 + 0.4
            # softmax over (background at ~8, this class at ~8 + logit(confidence))
            logits[b, rows, label] = logits[b, rows, 0] + torch.logit(confidence)
    offsets = torch.randn(batch, num_priors, 4, generator=generator) * 0.5
    return logits, offsets


def postprocess_section(config: Config, options: BenchOptions) -> dict[str, Any]:
    """Milliseconds per image of :class:`dsod.postprocess.PostProcessor` (softmax, decoding,
    top-k, batched NMS, keep 200) on :func:`trained_like_outputs` for the config's priors."""
    device, counts = options.torch_device, options.counts
    postprocessor = build_postprocessor(config)
    num_priors = postprocessor.priors.shape[0]
    logits, offsets = trained_like_outputs(
        num_priors, config.num_classes, counts.postprocess_batch
    )
    logits, offsets = logits.to(device), offsets.to(device)
    sizes = [(500, 375)] * counts.postprocess_batch
    detections: list[Detections] = []
    times = time_runs(
        lambda: detections.extend(postprocessor(logits, offsets, sizes)),
        counts.postprocess_runs,
        counts.warmup,
        device,
    )
    scores = logits.float().softmax(-1)[..., 1:]
    candidates = (scores > postprocessor.conf_threshold).sum((1, 2)).float().mean()
    return {
        "ms_per_image": median(times) * 1e3 / counts.postprocess_batch,
        "batch": counts.postprocess_batch,
        "priors": num_priors,
        "classes": config.num_object_classes,
        "candidates_per_image": float(candidates),
        "detections_per_image": float(np.mean([len(d) for d in detections])),
    }


def write_synthetic_voc(
    root: Path, count: int, width: int = 640, height: int = 480, seed: int = 0
) -> tuple[str, ...]:
    """``count`` photo-like JPEGs (smooth colour noise plus grain, quality 90) with 5-15
    random boxes each, in VOC layout under ``root`` (split ``train``). Returns the class
    names."""
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in range(count)]
    for image_id in ids:
        coarse = rng.integers(0, 256, (height // 40, width // 40, 3)).astype(np.uint8)
        image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(
            str(root / "JPEGImages" / f"{image_id}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90]
        )
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = f"{image_id}.jpg"
        size = ET.SubElement(ann, "size")
        for key, value in (("width", width), ("height", height), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        for _ in range(int(rng.integers(5, 16))):
            w, h = rng.uniform(20, 200, 2)
            x, y = rng.uniform(1, width - w), rng.uniform(1, height - h)
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = SYNTHETIC_CLASSES[int(rng.integers(3))]
            ET.SubElement(obj, "difficult").text = "0"
            box = ET.SubElement(obj, "bndbox")
            for key, value in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
                ET.SubElement(box, key).text = str(int(value))
        ET.ElementTree(ann).write(root / "Annotations" / f"{image_id}.xml")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(ids) + "\n")
    return SYNTHETIC_CLASSES


EXTRA_EXAMPLE = (
    {"name": "GaussianBlur", "blur_limit": [3, 5], "p": 0.5},
    {"name": "CLAHE", "p": 0.5},
    {"name": "Affine", "rotate": [-10, 10], "p": 0.5},
)
"""The ``augment.extra`` timed in the data section: blur, CLAHE and a rotation, each p 0.5."""


def _per_second(count: int, seconds: float) -> float:
    return count / max(seconds, 1e-9)


def _pipeline_rates(config: Config, dataset: VOCDataset, count: int) -> dict[str, float]:
    """Images per second of each stage and of whole training samples, on one thread."""
    indices = [i % len(dataset) for i in range(count)]
    annotations = [dataset.annotation(i) for i in indices]
    # The data set's own classes (BCCD's or the synthetic ones), whatever the model's:
    # the number of classes changes nothing here.
    names = tuple(dataset.class_names)
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, num_classes=with_background(len(names))),
        data=dataclasses.replace(config.data, class_names=names),
    )
    samples = build_training_samples(config, dataset)
    samples[(0, indices[0])]  # warm-up: first decode, LUTs, prior tensors

    start = time.perf_counter()
    images = [read_image(a.image_path) for a in annotations]
    decode = time.perf_counter() - start

    if config.augment.expand_max_ratio is None:  # fitted when a run reads its data
        config = dataclasses.replace(
            config, augment=dataclasses.replace(config.augment, expand_max_ratio=4.0)
        )
    transform = TrainTransform(config.model.input_size, config.augment, seed=0)
    start = time.perf_counter()
    outputs = [transform(image, a.boxes, a.labels) for image, a in zip(images, annotations)]
    augment = time.perf_counter() - start
    # the same with augment.extra as data/README.md shows it (albumentations, bbox-aware)
    extra = TrainTransform(
        config.model.input_size, dataclasses.replace(config.augment, extra=EXTRA_EXAMPLE), seed=0
    )
    extra(images[0], annotations[0].boxes, annotations[0].labels)  # warm-up
    start = time.perf_counter()
    for image, a in zip(images, annotations):
        extra(image, a.boxes, a.labels)
    augment_extra = time.perf_counter() - start

    start = time.perf_counter()
    for _, boxes, labels in outputs:
        samples.encoder(torch.from_numpy(boxes), torch.from_numpy(labels))
    match = time.perf_counter() - start

    start = time.perf_counter()
    for epoch, index in enumerate(indices):
        samples[(epoch + 1, index)]
    whole = time.perf_counter() - start
    return {
        "decode_img_s": _per_second(count, decode),
        "augment_img_s": _per_second(count, augment),
        "augment_with_extra_img_s": _per_second(count, augment_extra),
        "match_img_s": _per_second(count, match),
        "sample_img_s": _per_second(count, whole),
    }


def data_section(config: Config, options: BenchOptions) -> dict[str, Any]:
    """Training samples per second of one data-loader worker: JPEG decoding
    (:func:`read_image`), SSD augmentation (:class:`TrainTransform` to the config's input
    size) and prior matching (:class:`TargetEncoder` with the config's priors), each stage
    alone and together as :class:`TrainingSamples` produces them. One torch and one OpenCV
    thread, as in a worker. The augmentation is also timed with :data:`EXTRA_EXAMPLE` as
    ``augment.extra``. Uses the BCCD images under ``options.data_root`` when they are
    there, else synthetic 640x480 JPEGs in a temporary folder."""
    count = options.counts.data_images
    root = Path(options.data_root)
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with torch_threads(1):
            if (root / "ImageSets/Main/trainval.txt").is_file():
                dataset = VOCDataset(root, ["trainval"], BCCD_CLASSES)
                rates = _pipeline_rates(config, dataset, count)
                source = f"BCCD at {root}"
            else:
                with tempfile.TemporaryDirectory(prefix="dsod_bench_") as tmp:
                    names = write_synthetic_voc(Path(tmp), min(count, 32))
                    dataset = VOCDataset(tmp, ["train"], names)
                    rates = _pipeline_rates(config, dataset, count)
                source = "synthetic 640x480 JPEGs (no data at --data-root)"
    finally:
        cv2.setNumThreads(cv2_threads)
    priors = build_priors(config).num_priors
    return {
        "source": source,
        "images": count,
        "input_size": config.model.input_size,
        "priors": priors,
        **rates,
    }


def synthetic_voc_eval_inputs(
    num_images: int, detections_per_image: int, num_classes: int = 20, seed: int = 0
) -> tuple[list[Annotation], dict[str, Detections], list[str]]:
    """VOC07-test-like ground truth (1-5 boxes per 500x375 image, 10% difficult) and
    ``detections_per_image`` detections per image: a jittered copy of each object plus
    random boxes of random classes, with random scores."""
    rng = np.random.default_rng(seed)
    annotations, detections = [], {}
    for i in range(num_images):
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, 200, (n, 2))], 1).astype(np.float32)
        boxes = np.minimum(boxes, [500, 375, 500, 375]).astype(np.float32)
        labels = rng.integers(1, num_classes + 1, n)
        annotations.append(
            Annotation(f"{i:06d}", f"{i:06d}.jpg", 500, 375, boxes, labels, rng.random(n) < 0.1)
        )
        extra = max(0, detections_per_image - n)
        xy = rng.uniform(0, 400, (extra, 2))
        random_boxes = np.concatenate([xy, xy + rng.uniform(10, 250, (extra, 2))], 1)
        det_boxes = np.concatenate([boxes + rng.normal(0, 8, boxes.shape), random_boxes])
        det_boxes = np.clip(det_boxes, 0, [500, 375, 500, 375]).astype(np.float32)
        det_boxes[:, 2:] = np.maximum(det_boxes[:, 2:], det_boxes[:, :2] + 1)
        det_labels = np.concatenate([labels, rng.integers(1, num_classes + 1, extra)])
        scores = rng.random(len(det_boxes)).astype(np.float32)
        detections[f"{i:06d}"] = Detections(det_boxes, scores, det_labels.astype(np.int64))
    return annotations, detections, [f"class{c}" for c in range(1, num_classes + 1)]


def voc_eval_section(options: BenchOptions) -> dict[str, Any]:
    """Seconds of :func:`dsod.evaluation.voc.evaluate_voc` (both AP variants, all 20
    classes) on :func:`synthetic_voc_eval_inputs` of ``counts.voc_images`` images."""
    counts = options.counts
    annotations, detections, names = synthetic_voc_eval_inputs(
        counts.voc_images, counts.voc_detections
    )
    result = []
    times = time_runs(
        lambda: result.append(evaluate_voc(annotations, detections, names)),
        counts.voc_runs,
        0,
        torch.device("cpu"),
    )
    return {
        "seconds": median(times),
        "images": counts.voc_images,
        "detections_per_image": counts.voc_detections,
        "detections": counts.voc_images * counts.voc_detections,
        "map07": float(result[-1].map07),
    }
