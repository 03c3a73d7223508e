"""The work behind ``tools/eval.py``: run a checkpoint over a config's test split, or read
detections that already exist, then score them (VOC mAP and COCO AP) and write the results.

Files written into the output folder:

* ``voc_results/comp4_det_test_<class>.txt``: the VOC devkit's results format (model runs);
* ``coco_results.json``: COCO results ``[{"image_id", "category_id", "bbox", "score"}]``
  (model runs). On a COCO data set ``image_id`` and ``category_id`` are the annotation
  file's own; on a VOC-layout data set image ids are ``1..N`` in test-split order
  (:func:`dsod.evaluation.coco.coco_image_id_map`) and category ids ``1..C``;
* ``pr_curves.png``: precision/recall per class;
* with ``json_path``: every figure as JSON (:meth:`Scores.as_dict` plus run details, the
  test split's problems among them: ``data_problems``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dsod.config import Config
from dsod.data.datasets import build_test_set, check_classes
from dsod.data.errors import DataError, Problem
from dsod.data.loader import DetectionDataset, TestSamples
from dsod.data.transforms import TestTransform
from dsod.engine.atomic_write import write_text_atomic
from dsod.engine.builders import build_postprocessor
from dsod.engine.checkpoint import adopt_checkpoint_settings, load_checkpoint
from dsod.engine.evaluate import Scores, coco_id_maps, predict, score
from dsod.engine.from_data import with_class_names
from dsod.engine.trained_model import TrainedModel, load_trained_model
from dsod.runtime.network import RunSettings, prepare_network
from dsod.evaluation.coco import detections_to_coco_results
from dsod.evaluation.voc_files import (plot_pr_curves, read_voc_results_in_file_order,
                                        result_file_names, write_voc_results)
from dsod.structures import Detections

logger = logging.getLogger(__name__)

VOC_PREFIX = "comp4_det_test_"


def default_eval_dir(config: Config) -> Path:
    """``<training output folder>/eval``: ``outputs/<config name>/eval`` by default."""
    return Path(config.train.out_dir or Path("outputs") / config.name) / "eval"


def load_test_set(config: Config, partial: bool = False) -> DetectionDataset:
    """The config's test split. Unless ``partial``, a split that left out more than
    ``train.max_bad_sample_fraction`` of its images for unusable annotation files is
    refused (:func:`build_test_set`)."""
    return build_test_set(config.data, None if partial else config.train.max_bad_sample_fraction)


def run_model(trained: TrainedModel, dataset: DetectionDataset,
              device: str | torch.device | None = None, batch_size: int | None = None,
              workers: int | None = None, progress: bool = True, amp: str | None = None,
              compile: bool = False) -> tuple[dict[str, Detections], list[int]]:
    """Detections of a trained model on every image of ``dataset``, the network run as
    inference runs it (:func:`~dsod.runtime.network.prepare_network`). ``amp`` ("auto",
    "none", "bf16", "fp16"; None: ``train.amp`` on GPUs, fp32 on the CPU) and ``compile``
    (``torch.compile`` with frozen weights) choose how.

    Returns:
        ``(image_id -> Detections in original-image pixels, unreadable image indices)``.
    """
    config = trained.config
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if amp is None:
        amp = config.train.amp if device.type == "cuda" else "none"
    settings = RunSettings.resolve(device, amp, config.train.channels_last,
                                   config.train.speed_paths)
    network = prepare_network(trained.model, settings, training=False, compile=compile)
    samples = TestSamples(dataset, TestTransform(config.model.input_size, config.augment.mean_bgr),
                          config.data.on_bad_sample)
    return predict(network, dataset, samples, build_postprocessor(config),
                   batch_size=batch_size or config.test.batch_size,
                   workers=config.data.workers if workers is None else workers,
                   progress=progress)


def write_results(out_dir: str | Path, dataset: DetectionDataset,
                  detections: Mapping[str, Detections]) -> tuple[Path, Path]:
    """Write ``out_dir/voc_results/comp4_det_test_<class>.txt`` and
    ``out_dir/coco_results.json``; returns the two paths."""
    out = Path(out_dir)
    annotations = [dataset.annotation(i) for i in range(len(dataset))]
    voc_dir = out / "voc_results"
    write_voc_results(voc_dir, annotations, detections, dataset.class_names, VOC_PREFIX)
    image_ids, category_ids = coco_id_maps(dataset)
    results = detections_to_coco_results(detections, image_ids, category_ids)
    coco_path = out / "coco_results.json"
    coco_path.write_text(json.dumps(results))
    return voc_dir, coco_path


def _check_known(detections: Mapping[str, Detections], dataset: DetectionDataset,
                 source: str) -> None:
    known = {dataset.annotation(i).image_id for i in range(len(dataset))}
    unknown = [key for key in detections if key not in known]
    if unknown:
        raise DataError(f"{source}: detections for {len(unknown)} image(s) that are not in the "
                        f"test split, e.g. {unknown[0]!r} (results of another split?)")


def read_voc_result_dir(directory: str | Path, dataset: DetectionDataset,
                        prefix: str = VOC_PREFIX
                        ) -> tuple[dict[str, Detections], dict[str, np.ndarray]]:
    """Detections from devkit results files ``<directory>/<prefix><class>.txt``, and each
    one's line position (the devkit's order for equal scores; see
    :func:`read_voc_results_in_file_order`).

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
        raise DataError(f"VOC results folder {directory} holds no results file "
                        f"{prefix}<class>.txt for any class, e.g. {prefix}{parts[0]}.txt")
    try:
        detections, order = read_voc_results_in_file_order(directory, names, prefix)
    except ValueError as error:
        raise DataError(str(error)) from None
    _check_known(detections, dataset, str(directory))
    return detections, order


def read_coco_results(path: str | Path, dataset: DetectionDataset
                      ) -> tuple[dict[str, Detections], list[dict[str, Any]]]:
    """Detections from a COCO results JSON (``[{"image_id", "category_id", "bbox": [x, y, w,
    h], "score"}]``); ids are mapped back as :func:`coco_id_maps` assigns them. Also the
    checked entries as they are (only those four keys), for pycocotools to score exactly
    what the file says.

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
            raise DataError(f"COCO results {path}: entry {number} is not "
                            f'{{"image_id", "category_id", "bbox": [x, y, w, h], "score"}}: '
                            f"{str(entry)[:100]} ({type(error).__name__}: {error})") from None
        image_id = image_of.get(coco_image)
        if image_id is None:
            raise DataError(f"COCO results {path}: entry {number} names image id {coco_image!r}, "
                            f"which is not in the test split (on a VOC-layout data set image "
                            f"ids are 1..{len(dataset)} in test-split order)")
        if category not in label_of:
            raise DataError(f"COCO results {path}: entry {number} names category id "
                            f"{category!r}; the test split has {category_ids}")
        boxes, scores, labels = per_image.setdefault(image_id, ([], [], []))
        boxes.append((x, y, x + w, y + h))
        scores.append(value)
        labels.append(label_of[category])
        checked.append({"image_id": coco_image, "category_id": category,
                        "bbox": [x, y, w, h], "score": value})
    detections = {image_id: Detections(np.asarray(b, np.float64).reshape(-1, 4),
                                       np.asarray(s, np.float64), np.asarray(lab, np.int64))
                  for image_id, (b, s, lab) in per_image.items()}
    return detections, checked


def problems_as_dicts(problems: Sequence[Problem]) -> list[dict[str, str]]:
    """The test split's problems (:class:`~dsod.data.errors.Problem`) as JSON-ready dicts
    ``{"file", "severity", "kind", "message"}``, in the readers' order."""
    return [{"file": p.file, "severity": p.severity, "kind": p.kind, "message": p.message}
            for p in problems]


def report(scores: Scores, out_dir: str | Path, json_path: str | Path | None = None,
           details: Mapping[str, Any] | None = None, failed: list[str] | None = None
           ) -> dict[str, Any]:
    """Print the per-class table and the summary, write ``out_dir/pr_curves.png`` and, with
    ``json_path``, the figures as JSON. Returns the JSON-ready dict. An output that cannot
    be written is added to ``failed`` (when given) and the others are still written."""
    print(scores.report())
    failed = [] if failed is None else failed
    figures = {**scores.as_dict(), **(details or {})}
    outputs = [("precision/recall curves", lambda: plot_pr_curves(scores.voc, None,
                                                                 Path(out_dir) / "pr_curves.png"))]
    if json_path is not None:
        def write_json() -> Path:
            path = Path(json_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            return write_text_atomic(path, json.dumps(figures, indent=2))
        outputs.append(("figures", write_json))
    for what, write in outputs:
        try:
            print(f"{what}: {write()}")
        except OSError as error:
            failed.append(f"the {what}: {error.strerror or error} ({error.filename or ''})")
    return figures


def evaluate_command(config: Config, checkpoint: str | Path | None = None,
                     voc_results: str | Path | None = None,
                     coco_results: str | Path | None = None, out_dir: str | Path | None = None,
                     json_path: str | Path | None = None, device: str | None = None,
                     batch_size: int | None = None, workers: int | None = None,
                     progress: bool = True, amp: str | None = None,
                     compile: bool = False, partial: bool = False) -> dict[str, Any]:
    """Everything ``tools/eval.py`` does; exactly one of ``checkpoint``, ``voc_results`` and
    ``coco_results`` says where the detections come from. ``partial`` scores a test split
    even when many of its images had to be left out, and says how many in the output and
    the figures (``left_out_images``). Returns the figures."""
    sources = [s for s in (checkpoint, voc_results, coco_results) if s is not None]
    if len(sources) != 1:
        raise ValueError("give exactly one of checkpoint, voc_results and coco_results")
    out = Path(out_dir) if out_dir is not None else default_eval_dir(config)
    logger.info("writing to %s", out.absolute())
    state = load_checkpoint(checkpoint) if checkpoint is not None else None
    if state is not None:  # class list and fitted priors as the run resolved them
        config = adopt_checkpoint_settings(config, state, f"checkpoint {checkpoint}")
    config = with_class_names(config)
    dataset = load_test_set(config, partial)
    left_out = dataset.left_out
    if left_out:
        print(f"left out: {len(left_out)} of the {len(dataset) + len(left_out)} test images "
              f"(unusable annotation files, first: {left_out[0]}); the figures are for the "
              f"other {len(dataset)}")
    trained = None
    if state is not None:
        def same_classes(resolved: Config, trained_names: list | None) -> None:
            check_classes(dataset, resolved.num_classes, trained_names,
                          f"the test split {list(resolved.data.test)}", f"checkpoint {checkpoint}")
        trained = load_trained_model(checkpoint, config, state=state, check=same_classes)
    unreadable: list[int] = []
    tie_break, coco_entries = None, None
    if trained is not None:
        detections, unreadable = run_model(trained, dataset, device, batch_size, workers,
                                           progress, amp, compile)
    elif voc_results is not None:
        detections, tie_break = read_voc_result_dir(voc_results, dataset)
    else:
        detections, coco_entries = read_coco_results(coco_results, dataset)
    # Only now: a refused checkpoint or unreadable results leave no empty folder behind.
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []  # outputs that could not be written; the figures still are
    if checkpoint is not None:
        try:
            voc_dir, coco_path = write_results(out, dataset, detections)
            print(f"detections: {voc_dir}/{VOC_PREFIX}<class>.txt and {coco_path}")
        except OSError as error:
            failed.append(f"the detections under {out}: {error.strerror or error} "
                          f"({error.filename or ''})")
    try:
        scores = score(dataset, detections, tie_break, coco_entries)
    except ValueError as error:  # e.g. pycocotools rejecting the results
        raise DataError(f"cannot score the detections: {error}") from None
    details = {
        "config": config.name, "detections_from": str(sources[0]), "images": len(dataset),
        "unreadable_images": [dataset.annotation(i).image_path for i in unreadable],
        "left_out_images": left_out,
        "data_problems": problems_as_dicts(dataset.problems),
    }
    figures = report(scores, out, json_path, details, failed)
    if failed:
        raise DataError("could not write " + "; ".join(failed) + " (the figures above are "
                        "complete)")
    return figures
