"""Settings a config leaves to the data: the class list, the run's length, priors fitted
to the boxes and how far to zoom out.

``data.class_names: null`` reads the class list from the training annotations
(:func:`resolve_class_names`); ``solver.max_iter: null`` sets the run's length from the
number of training images (:func:`run_length`); ``priors.fit: true`` fits the priors to
the training boxes (:func:`fit_config_priors`); ``augment.expand_max_ratio: null`` zooms
out only as far as the boxes stay matchable (:func:`fit_zoom_out`). Training resolves
them before it builds anything (:func:`prepare_training_data`) and saves the result in
its config and checkpoints;
evaluation and the Python API take them from the checkpoint
(:func:`~dsod.engine.checkpoint.adopt_checkpoint_settings`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator

import numpy as np

from dsod.config import Config, ConfigError, DataConfig
from dsod.config.labels import with_background
from dsod.coverage import LOW_COVERAGE, Coverage, coverage_lines, prior_coverage
from dsod.data.base import DetectionDataset
from dsod.data.coco import coco_class_names
from dsod.data.datasets import build_dataset, coco_split_paths
from dsod.data.errors import DataError
from dsod.data.voc import voc_class_names
from dsod.engine.builders import build_priors
from dsod.prior_fit import FittedPriors, fit_priors

logger = logging.getLogger(__name__)


def resolve_class_names(data: DataConfig) -> DataConfig:
    """``data`` with the class list filled in from the training split when it is null
    (VOC layout and the built-in shapes; COCO reads its JSON's categories itself)."""
    if data.class_names is not None or data.format == "coco":
        return data
    if data.format == "shapes":
        from dsod.data.shapes import SHAPES_CLASSES

        names = tuple(SHAPES_CLASSES)
    else:
        names = voc_class_names(data.root, data.train)
    logger.info("data.class_names from the training annotations (sorted): %s", list(names))
    return dataclasses.replace(data, class_names=names)


def with_class_names(config: Config) -> Config:
    """``config`` with :func:`resolve_class_names` applied, and ``model.num_classes``
    checked against the class list (one error naming both). On COCO data with no class
    list, ``model.num_classes`` follows from the first training JSON's categories."""
    if (
        config.data.format == "coco"
        and config.data.class_names is None
        and config.model.num_classes is None
        and config.data.train
    ):
        json_path, _ = coco_split_paths(config.data.root, config.data.train[0])
        try:
            names = coco_class_names(json_path)
        except DataError:  # no training JSON here (scoring results only): the reader says
            return config
        logger.info(
            "model.num_classes from the categories of %s: %d (%s) + background",
            json_path,
            len(names),
            ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
        )
        return dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, num_classes=with_background(len(names))),
        )
    data = resolve_class_names(config.data)
    names, wanted = data.class_names, config.model.num_classes
    if names is not None and wanted is not None and wanted != with_background(len(names)):
        expected = with_background(len(names))
        raise ConfigError(
            f"model.num_classes is {wanted}, but the data's classes are "
            f"{len(names)} ({list(names)}) + background = {expected}; "
            f"set model.num_classes to null or {expected}"
        )
    return dataclasses.replace(config, data=data)


def training_boxes(dataset: DetectionDataset) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per image, ``(boxes [N, 4] normalised xyxy, labels [N])`` as training uses them."""
    for index in range(len(dataset)):
        ann = dataset.training_targets(index)
        scale = np.array([ann.width, ann.height, ann.width, ann.height], dtype=np.float32)
        yield ann.boxes / scale, ann.labels


def input_pixel_boxes(dataset: DetectionDataset, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All training boxes as ``[N, 4]`` ``(cx, cy, w, h)`` in pixels of the network input,
    and their ``[N]`` labels."""
    parts = list(training_boxes(dataset))
    boxes = np.concatenate([b for b, _ in parts]) if parts else np.zeros((0, 4), np.float32)
    labels = np.concatenate([lab for _, lab in parts]) if parts else np.zeros(0, np.int64)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    cxcywh = np.concatenate([centre, boxes[:, 2:] - boxes[:, :2]], 1).astype(np.float64)
    return cxcywh * input_size, labels


def fit_config_priors(config: Config, dataset: DetectionDataset) -> tuple[Config, FittedPriors]:
    """``config`` with priors fitted to ``dataset``'s training boxes (``priors.fit`` then
    false: the values are what a later run or evaluation uses)."""
    boxes, labels = input_pixel_boxes(dataset, config.model.input_size)
    fitted = fit_priors(boxes, build_priors(config), config.loss.match_iou, labels)
    priors = dataclasses.replace(
        config.priors,
        min_sizes=fitted.min_sizes,
        max_sizes=fitted.max_sizes,
        aspect_ratios=fitted.aspect_ratios,
        fit=False,
    )
    return dataclasses.replace(config, priors=priors), fitted


def measure_coverage(config: Config, dataset: DetectionDataset) -> Coverage:
    """How ``config``'s priors cover ``dataset``'s training boxes (:mod:`dsod.coverage`)."""
    return prior_coverage(
        training_boxes(dataset),
        build_priors(config)(),
        dataset.class_names,
        config.model.input_size,
        config.loss.match_iou,
    )


def fitted_lines(fitted: FittedPriors, config: Config) -> list[str]:
    """The fitted priors as the config's YAML lines, with the class-weighted coverage that
    the fit maximised, before and after."""
    p = config.priors
    return [
        f"priors fitted to {fitted.num_boxes} training boxes at {config.model.input_size}"
        f"x{config.model.input_size} (class-weighted coverage {fitted.start_objective:.4f}"
        f" -> {fitted.objective:.4f}):",
        f"  min_sizes: {list(p.min_sizes)}",
        f"  max_sizes: {list(p.max_sizes)}",
        f"  aspect_ratios: {[list(r) for r in p.aspect_ratios]}",
    ]


def coverage_warning(coverage: Coverage, config_path: str = "CONFIG") -> str | None:
    """A warning naming the fix when fewer than ``LOW_COVERAGE`` of the boxes are covered
    (overall, or in a class with boxes)."""
    low = [
        (name, g)
        for name, g in [("all boxes", coverage.overall), *coverage.per_class.items()]
        if g.boxes and g.fraction < LOW_COVERAGE
    ]
    if not low:
        return None
    what = ", ".join(f"{name} {100 * g.fraction:.1f}%" for name, g in low)
    return (
        f"low prior coverage ({what} of boxes have a prior at IoU >= {coverage.match_iou:g}): "
        f"fit the priors to the data with priors.fit=true, or see the sizes that would "
        f"with: python tools/fit_priors.py {config_path}"
    )


RUN_PASSES = 25
"""A run whose length comes from the data sees its training images this many times..."""
RUN_IMAGES = (4000, 8000)
"""... but at least and at most this many images in all (docs/RESULTS.md: the budgets of
the shared data sets, 160 to 1,200 training images)."""


def run_length(num_images: int, batch_size: int) -> int:
    """Iterations of ``batch_size`` images for a run on ``num_images`` training images:
    :data:`RUN_PASSES` passes over them, kept within :data:`RUN_IMAGES` images, rounded up
    to whole iterations. 160 images at 16 give 250 iterations; 1,200 give 500."""
    return max(1, math.ceil(run_images(num_images) / batch_size))


def run_images(num_images: int) -> int:
    """The images a run on ``num_images`` training images sees: :data:`RUN_PASSES`
    passes over them, kept within :data:`RUN_IMAGES`."""
    return min(max(RUN_PASSES * num_images, RUN_IMAGES[0]), RUN_IMAGES[1])


def with_run_length(config: Config, num_images: int) -> Config:
    """``config`` with ``solver.max_iter`` set by :func:`run_length` where it is None
    (logged); unchanged otherwise."""
    if config.solver.max_iter is not None:
        return config
    max_iter = run_length(num_images, config.solver.batch_size)
    wanted = RUN_PASSES * num_images
    kept = run_images(num_images)
    bounds = f"{RUN_IMAGES[0]:,}-{RUN_IMAGES[1]:,}"
    if kept == wanted:
        images = f"{wanted:,} images, within {bounds}"
    else:
        images = f"{wanted:,} images, {'raised' if kept > wanted else 'cut'} to {kept:,}"
    logger.info(
        "solver.max_iter from the data: %d passes over %d training images (%s): "
        "%d iterations (set solver.max_iter to choose)",
        RUN_PASSES,
        num_images,
        images,
        max_iter,
    )
    return dataclasses.replace(
        config, solver=dataclasses.replace(config.solver, max_iter=max_iter)
    )


ZOOM_OUT_LIMIT = 4.0
"""The most a zoom-out fitted to the data shrinks an image (SSD's expand, up to 4x)."""
MIN_ZOOM_OUT = 1.5
"""A fitted zoom-out of less than this is no zoom-out (``augment.expand_prob`` 0)."""


def fit_zoom_out(config: Config, dataset: DetectionDataset) -> tuple[Config, str]:
    """``config`` with ``augment.expand_max_ratio`` set from the boxes where it is None,
    and a line saying what was chosen.

    Zooming out (SSD's expand) by ``r`` shrinks every box by ``r``; a box smaller than the
    smallest prior (``priors.min_sizes``) then matches no prior at IoU 0.5. The fitted
    ratio is the largest that keeps nine boxes in ten of every class at least that large:
    the smallest class's 10th percentile of the boxes' sides (``sqrt(w h)`` at the input
    size) over the smallest prior, at most :data:`ZOOM_OUT_LIMIT`. Below
    :data:`MIN_ZOOM_OUT` the objects are too small to shrink and ``expand_prob`` is set to 0
    instead.
    """
    augment = config.augment
    boxes, labels = input_pixel_boxes(dataset, config.model.input_size)
    if augment.expand_max_ratio is not None or len(boxes) == 0:
        return config, ""
    sides = np.sqrt(boxes[:, 2] * boxes[:, 3])
    # the smallest class decides: each keeps nine boxes in ten matchable
    small = min(float(np.percentile(sides[labels == label], 10)) for label in np.unique(labels))
    smallest_prior = float(min(config.priors.min_sizes))
    ratio = min(ZOOM_OUT_LIMIT, small / smallest_prior)
    if ratio < MIN_ZOOM_OUT:
        fitted = dataclasses.replace(augment, expand_max_ratio=1.0, expand_prob=0.0)
        line = (
            f"augment.expand_max_ratio from the data: no zoom-out (expand_prob 0): in "
            f"some class one box in ten is {small:.0f} px or less at the input size, too "
            f"close to the smallest prior ({smallest_prior:.0f} px) to shrink"
        )
    else:
        fitted = dataclasses.replace(augment, expand_max_ratio=round(ratio, 2))
        line = (
            f"augment.expand_max_ratio from the data: zoom out up to {ratio:.2f}x (with "
            f"p {augment.expand_prob:g}): nine boxes in ten of every class stay at least "
            f"as large as the smallest prior ({smallest_prior:.0f} px; one in ten of the "
            f"smallest class is {small:.0f} px or less)"
        )
    return dataclasses.replace(config, augment=fitted), line


def prepare_training_data(
    config: Config, config_path: str = "CONFIG"
) -> tuple[Config, DetectionDataset]:
    """Resolve the class list, read the training split, set the run's length and the
    zoom-out if the config leaves them to the data, fit the priors if asked, and log the
    priors' coverage of the training boxes (with a warning when it is low).

    Returns:
        ``(config with everything resolved, the training data set)``.
    """
    config = with_class_names(config)
    dataset = build_dataset(config.data, "train")
    config = with_run_length(config, len(dataset))
    if config.priors.fit:
        config, fitted = fit_config_priors(config, dataset)
        for line in fitted_lines(fitted, config):
            logger.info("%s", line)
    config, zoom_line = fit_zoom_out(config, dataset)
    if zoom_line:
        logger.info("%s", zoom_line)
    coverage = measure_coverage(config, dataset)
    logger.info("%s", "\n".join(coverage_lines(coverage)))
    warning = coverage_warning(coverage, config_path)
    if warning:
        logger.warning("%s", warning)
    return config, dataset
