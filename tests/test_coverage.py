"""Prior coverage worked by hand on a 100x100 input with one 2x2 source."""

from __future__ import annotations

import numpy as np
import pytest

from dsod.coverage import band_names, coverage_lines, prior_coverage
from dsod.priors import PriorGenerator

# Centres at 25 and 75 (step 50); per position a 40x40 and a 60x60 (sqrt(40 * 90)) prior.
PRIORS = PriorGenerator(100, [2], [40], [90], [[]])()


def _box(cx: float, cy: float, side: float) -> list[float]:
    return [
        (cx - side / 2) / 100,
        (cy - side / 2) / 100,
        (cx + side / 2) / 100,
        (cy + side / 2) / 100,
    ]


def test_coverage_counts_real_positives_by_class_and_size():
    # A: 40x40 on the (25, 25) centre: IoU 1 with the 40 prior; the 60 prior there only
    #    1600 / 3600 = 0.44. C: 60x60 on (75, 75): IoU 1 with the 60 prior, 0.44 with the 40.
    # B: 20x20 at (50, 75), between centres: its best prior (40 at (25, 75)) overlaps it
    #    5 x 20 = 100 px, IoU 100 / 1900 = 0.05; the matcher would force it, but it is not
    #    covered.
    images = [
        (np.array([_box(25, 25, 40), _box(75, 75, 60)]), np.array([1, 2])),
        (np.array([_box(50, 75, 20)]), np.array([1])),
    ]
    coverage = prior_coverage(images, PRIORS, ["cat", "dog"], input_size=100, match_iou=0.5)
    assert (coverage.overall.boxes, coverage.overall.covered) == (3, 2)
    assert coverage.overall.positives_per_box == pytest.approx(2 / 3)
    assert (coverage.per_class["cat"].boxes, coverage.per_class["cat"].covered) == (2, 1)
    assert coverage.per_class["dog"].fraction == 1.0
    assert (coverage.per_band["32-64"].boxes, coverage.per_band["32-64"].covered) == (2, 2)
    assert (coverage.per_band["16-32"].boxes, coverage.per_band["16-32"].covered) == (1, 0)
    assert coverage.per_band["<16"].boxes == 0
    # A looser threshold makes the 0.44 overlaps positives too: two priors each for A and C.
    loose = prior_coverage(images, PRIORS, ["cat", "dog"], 100, match_iou=0.4)
    assert loose.overall.positives == 4


def test_a_prior_counts_only_for_the_box_that_wins_it():
    # Two 40x40 boxes 2 px apart share the (25, 25) prior: IoU 1 for the first and
    # 38 * 40 / (3200 - 1520) = 0.905 for the second. The first wins it; the second has no
    # other prior at 0.5 (0.44 with the 60 prior), so it is not covered.
    images = [(np.array([_box(25, 25, 40), _box(27, 25, 40)]), np.array([1, 1]))]
    coverage = prior_coverage(images, PRIORS, ["cat"], 100, 0.5)
    assert (coverage.overall.covered, coverage.overall.positives) == (1, 1)


def test_an_image_without_boxes_adds_nothing_and_the_table_names_each_group():
    images = [
        (np.zeros((0, 4)), np.zeros(0, np.int64)),
        (np.array([_box(25, 25, 40)]), np.array([2])),
    ]
    coverage = prior_coverage(images, PRIORS, ["cat", "dog"], 100)
    assert coverage.overall.boxes == 1 and coverage.overall.fraction == 1.0
    lines = "\n".join(coverage_lines(coverage))
    assert "dog" in lines and "cat" not in lines  # classes without boxes are left out
    assert "size 32-64 px" in lines
    assert band_names((10, 20)) == ["<10", "10-20", ">=20"]
