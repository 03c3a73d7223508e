"""Priors fitted to boxes: deterministic, same shapes per position, covering what they fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsod.coverage import prior_coverage
from dsod.prior_fit import fit_priors
from dsod.priors import PriorGenerator

REFERENCE = dict(
    input_size=300,
    feature_sizes=[38, 19, 10, 5, 3, 2],
    min_sizes=[30, 60, 111, 162, 213, 264],
    max_sizes=[60, 111, 162, 213, 264, 315],
    aspect_ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    steps=[8, 16, 32, 64, 100, 300],
)


def _boxes(
    rng: np.random.Generator,
    n: int,
    side: tuple[float, float],
    aspect: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """``[n, 4]`` ``(cx, cy, w, h)`` inside a 300x300 input."""
    s = rng.uniform(*side, n)
    a = rng.uniform(*aspect, n)
    w, h = s * np.sqrt(a), s / np.sqrt(a)
    cx, cy = rng.uniform(w / 2, 300 - w / 2), rng.uniform(h / 2, 300 - h / 2)
    return np.stack([cx, cy, w, h], 1)


def _covered(boxes: np.ndarray, generator: PriorGenerator) -> float:
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    images = [(xyxy[i : i + 1] / 300, np.ones(1, np.int64)) for i in range(len(xyxy))]
    return prior_coverage(images, generator(), ["a"], 300).overall.fraction


def _with(fitted) -> PriorGenerator:
    return PriorGenerator(
        **{
            **REFERENCE,
            "min_sizes": fitted.min_sizes,
            "max_sizes": fitted.max_sizes,
            "aspect_ratios": fitted.aspect_ratios,
        }
    )


def test_small_objects_get_small_priors_and_become_covered():
    # 14-20 px objects: the reference's smallest prior (30 px on an 8 px grid) covers few.
    boxes = _boxes(np.random.default_rng(0), 2000, (14, 20))
    reference = PriorGenerator(**REFERENCE)
    fitted = fit_priors(boxes, reference, match_iou=0.5)
    assert fitted.min_sizes[0] < 20
    assert fitted.objective > fitted.start_objective
    assert _covered(boxes, reference) < 0.3
    assert _covered(boxes, _with(fitted)) > 0.8


def test_elongated_objects_change_the_aspect_ratios_when_the_data_asks():
    # 8-10 times as wide as high: no size of the reference's ratios (at most 3) reaches
    # IoU 0.5 with them
    boxes = _boxes(np.random.default_rng(1), 2000, (60, 80), aspect=(8, 10))
    fitted = fit_priors(boxes, PriorGenerator(**REFERENCE))
    assert any(max(r) >= 4 for r in fitted.aspect_ratios)
    assert _covered(boxes, _with(fitted)) > _covered(boxes, PriorGenerator(**REFERENCE)) + 0.2


def test_the_fit_is_deterministic_and_keeps_the_network_shapes():
    rng = np.random.default_rng(2)
    boxes = np.concatenate(
        [
            _boxes(rng, 500, (15, 25)),
            _boxes(rng, 500, (50, 70), (0.5, 2)),
            _boxes(rng, 200, (120, 250)),
        ]
    )
    reference = PriorGenerator(**REFERENCE)
    first, second = fit_priors(boxes, reference), fit_priors(boxes.copy(), reference)
    assert first == second
    fitted = _with(first)
    assert fitted.priors_per_location == reference.priors_per_location
    assert fitted.num_priors == reference.num_priors
    assert torch.equal(fitted(), _with(second)())
    # SSD's scale ladder: each source's squares between its neighbours' sizes
    assert all(large > small for small, large in zip(first.min_sizes, first.max_sizes))
    assert all(
        large <= following for large, following in zip(first.max_sizes, first.min_sizes[1:])
    )


def test_priors_far_too_small_are_pushed_up_the_ladder_to_the_boxes():
    # As after changing the input size: every configured prior is a few pixels.
    small = dict(REFERENCE, min_sizes=[2, 3, 4, 5, 6, 7], max_sizes=[3, 4, 5, 6, 7, 8])
    boxes = _boxes(np.random.default_rng(6), 1000, (40, 120))
    fitted = fit_priors(boxes, PriorGenerator(**small))
    assert fitted.start_objective == 0.0 and _covered(boxes, _with(fitted)) > 0.9


def test_sources_no_box_needs_keep_their_configured_sizes():
    boxes = _boxes(np.random.default_rng(3), 500, (20, 30))
    fitted = fit_priors(boxes, PriorGenerator(**REFERENCE))
    # Nothing is larger than 30 px: the two coarsest sources gain nothing from a change.
    assert fitted.min_sizes[-2:] == (213, 264) and fitted.max_sizes[-2:] == (264, 315)


def test_every_class_weighs_the_same_however_many_boxes_it_has():
    rng = np.random.default_rng(4)
    common, rare = _boxes(rng, 300, (50, 70)), _boxes(rng, 30, (15, 22))
    boxes = np.concatenate([common, rare])
    labels = np.array([1] * 300 + [2] * 30)
    reference = PriorGenerator(**REFERENCE)
    fitted = fit_priors(boxes, reference, labels=labels)
    # Ten copies of the common class change nothing: the fit sees the same objective.
    tenfold = fit_priors(
        np.concatenate([np.tile(common, (10, 1)), rare]),
        reference,
        labels=np.array([1] * 3000 + [2] * 30),
    )
    assert (fitted.min_sizes, fitted.max_sizes, fitted.aspect_ratios) == (
        tenfold.min_sizes,
        tenfold.max_sizes,
        tenfold.aspect_ratios,
    )
    assert fitted.objective == pytest.approx(tenfold.objective)


def test_round_objects_keep_the_configured_aspect_ratios():
    # Near-square ratios would raise the IoU of round objects a little and cover no more.
    boxes = _boxes(np.random.default_rng(5), 1000, (40, 70))
    fitted = fit_priors(boxes, PriorGenerator(**REFERENCE))
    assert fitted.aspect_ratios == ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
