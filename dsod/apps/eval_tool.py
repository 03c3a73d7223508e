"""The work behind ``tools/eval.py``: predict a config's test split with a checkpoint, or
read detections that already exist, then score them (VOC mAP and COCO AP) and report.

:func:`run_eval` resolves everything once at the top (the checkpoint's settings, the class
list, the test split) and passes values down: the network's detections come from
:func:`~dsod.engine.predict.predict_split`, the one prediction path the trainer uses too;
results files are read and written by :mod:`dsod.evaluation.results_files`; the figures
are :func:`~dsod.evaluation.scores.score_detections`'.

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dsod.config import Config
from dsod.data.base import DetectionDataset
from dsod.data.datasets import build_test_set, check_classes
from dsod.data.errors import DataError, Problem
from dsod.engine.atomic_write import write_text_atomic
from dsod.engine.checkpoint import load_checkpoint
from dsod.engine.from_data import with_class_names
from dsod.engine.predict import predict_split
from dsod.engine.trained_model import build_trained_model, checkpoint_config, recorded_class_names
from dsod.evaluation.results_files import (
    VOC_PREFIX,
    read_coco_results,
    read_voc_result_dir,
    write_results,
)
from dsod.evaluation.scores import Scores, score_detections
from dsod.evaluation.voc_files import plot_pr_curves
from dsod.runtime.network import RunSettings

__all__ = [
    "default_eval_dir",
    "eval_settings",
    "load_test_set",
    "problems_as_dicts",
    "report",
    "run_eval",
]

logger = logging.getLogger(__name__)


def default_eval_dir(config: Config) -> Path:
    """``<training output folder>/eval``: ``outputs/<config name>/eval`` by default."""
    return Path(config.train.out_dir or Path("outputs") / config.name) / "eval"


def load_test_set(config: Config, partial: bool = False) -> DetectionDataset:
    """The config's test split. Unless ``partial``, a split that left out more than
    ``train.max_bad_sample_fraction`` of its images for unusable annotation files is
    refused (:func:`build_test_set`)."""
    return build_test_set(config.data, None if partial else config.train.max_bad_sample_fraction)


def eval_settings(
    config: Config, device: str | torch.device | None = None, amp: str | None = None
) -> RunSettings:
    """How the tool runs the network: on ``device`` (default: cuda if available), in the
    precision ``amp`` ("auto", "none", "bf16", "fp16"; None: ``train.amp`` on GPUs, fp32 on
    the CPU), with the config's layout and speed paths."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if amp is None:
        amp = config.train.amp if device.type == "cuda" else "none"
    return RunSettings.resolve(device, amp, config.train.channels_last, config.train.speed_paths)


def problems_as_dicts(problems: Sequence[Problem]) -> list[dict[str, str]]:
    """The test split's problems (:class:`~dsod.data.errors.Problem`) as JSON-ready dicts
    ``{"file", "severity", "kind", "message"}``, in the readers' order."""
    return [
        {"file": p.file, "severity": p.severity, "kind": p.kind, "message": p.message}
        for p in problems
    ]


def report(
    scores: Scores,
    out_dir: str | Path,
    json_path: str | Path | None = None,
    details: Mapping[str, Any] | None = None,
    failed: list[str] | None = None,
) -> dict[str, Any]:
    """Print the per-class table and the summary, write ``out_dir/pr_curves.png`` and, with
    ``json_path``, the figures as JSON. Returns the JSON-ready dict. An output that cannot
    be written is added to ``failed`` (when given) and the others are still written."""
    print(scores.report())
    failed = [] if failed is None else failed
    figures = {**scores.as_dict(), **(details or {})}
    outputs = [
        (
            "precision/recall curves",
            lambda: plot_pr_curves(scores.voc, None, Path(out_dir) / "pr_curves.png"),
        )
    ]
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


def run_eval(
    config: Config,
    checkpoint: str | Path | None = None,
    voc_results: str | Path | None = None,
    coco_results: str | Path | None = None,
    out_dir: str | Path | None = None,
    json_path: str | Path | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = True,
    amp: str | None = None,
    compile: bool = False,
    partial: bool = False,
) -> dict[str, Any]:
    """Everything ``tools/eval.py`` does; exactly one of ``checkpoint``, ``voc_results`` and
    ``coco_results`` says where the detections come from. ``partial`` scores a test split
    even when many of its images had to be left out, and says how many in the output and
    the figures (``left_out_images``). Returns the figures.

    Raises:
        CheckpointError: the checkpoint is unreadable, was trained with other prediction
            settings than ``config``, or its weights do not fit.
        DataError: the test split cannot be read, has other classes than the checkpoint,
            the results files do not fit it, or an output cannot be written.
        ConfigError: the config's class count does not fit its data.
    """
    sources = [s for s in (checkpoint, voc_results, coco_results) if s is not None]
    if len(sources) != 1:
        raise ValueError("give exactly one of checkpoint, voc_results and coco_results")
    out = Path(out_dir) if out_dir is not None else default_eval_dir(config)
    logger.info("writing to %s", out.absolute())
    state = load_checkpoint(checkpoint) if checkpoint is not None else None
    if state is not None:  # class list and fitted priors as the run resolved them, checked
        config = checkpoint_config(checkpoint, state, config)
    config = with_class_names(config)
    dataset = load_test_set(config, partial)
    left_out = dataset.left_out
    if left_out:
        print(
            f"left out: {len(left_out)} of the {len(dataset) + len(left_out)} test images "
            f"(unusable annotation files, first: {left_out[0]}); the figures are for the "
            f"other {len(dataset)}"
        )
    unreadable: list[int] = []
    tie_break, coco_entries = None, None
    if state is not None:
        # A split of other classes is named as such, before weights that would not fit.
        check_classes(
            dataset,
            config.num_object_classes,
            recorded_class_names(state),
            f"the test split {list(config.data.test)}",
            f"checkpoint {checkpoint}",
        )
        trained = build_trained_model(checkpoint, state, config)
        detections, unreadable = predict_split(
            trained.model,
            dataset,
            config,
            eval_settings(config, device, amp),
            compile=compile,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
        )
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
            failed.append(
                f"the detections under {out}: {error.strerror or error} ({error.filename or ''})"
            )
    try:
        scores = score_detections(dataset, detections, tie_break, coco_entries)
    except ValueError as error:  # e.g. pycocotools rejecting the results
        raise DataError(f"cannot score the detections: {error}") from None
    details = {
        "config": config.name,
        "detections_from": str(sources[0]),
        "images": len(dataset),
        "unreadable_images": [dataset.annotation(i).image_path for i in unreadable],
        "left_out_images": left_out,
        "data_problems": problems_as_dicts(dataset.problems),
    }
    figures = report(scores, out, json_path, details, failed)
    if failed:
        raise DataError(
            "could not write " + "; ".join(failed) + " (the figures above are complete)"
        )
    return figures
