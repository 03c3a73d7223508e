import math

import pytest
import torch

from dsod.config import Config
from dsod.engine.builders import build_priors
from dsod.models.detector import DSOD
from dsod.priors import PriorGenerator, priors_per_location


def test_tiny_config_golden_priors():
    # 16x16 input, one 2x2 map, step 8: centres at 4 and 12 px = 0.25 and 0.75.
    # Shapes (px): min 4 -> 4x4; sqrt(4*9) = 6 -> 6x6; ratio 2 -> 4*sqrt2 x 4/sqrt2 and flipped.
    gen = PriorGenerator(16, [2], [4], [9], [[2]], steps=[8])
    priors = gen()
    r = math.sqrt(2)
    shapes = [(4, 4), (6, 6), (4 * r, 4 / r), (4 / r, 4 * r)]
    expected = []
    for cy in (4, 12):
        for cx in (4, 12):
            for w, h in shapes:
                expected.append([cx / 16, cy / 16, w / 16, h / 16])
    torch.testing.assert_close(priors, torch.tensor(expected, dtype=torch.float32))


def test_priors_per_location_from_ratios():
    assert priors_per_location([2]) == 4
    assert priors_per_location([2, 3]) == 6
    assert priors_per_location([2, 3], flip=False) == 4


def test_dsod300_voc_has_8744_priors_and_the_last_map_quirk():
    gen = build_priors(Config())
    assert gen.feature_sizes == (38, 19, 10, 5, 3, 2)
    assert gen.priors_per_location == [4, 6, 6, 6, 4, 4]
    assert gen.num_priors == 5776 + 2166 + 600 + 150 + 36 + 16 == 8744
    priors = gen()
    assert priors.shape == (8744, 4)
    last = priors[-16:]
    # QUIRK: step 300 on a 2x2 map puts centres at 0.5 and 1.5 image sides.
    assert sorted(set(last[:, 0].tolist())) == [0.5, 1.5]
    assert sorted(set(last[:, 1].tolist())) == [0.5, 1.5]


def test_derived_steps_fix_the_quirk():
    gen = PriorGenerator(300, [38, 19, 10, 5, 3, 2], [30] * 6, [60] * 6, [[2]] * 6, steps=None)
    last = gen()[-16:]
    assert sorted(set(last[:, 0].tolist())) == pytest.approx([0.25, 0.75])


@pytest.mark.parametrize(
    "size, expected",
    [(300, [38, 19, 10, 5, 3, 2]), (512, [64, 32, 16, 8, 4, 2]), (128, [16, 8, 4, 2, 1, 1])],
)
def test_feature_sizes_follow_ceil_rounding(size, expected):
    assert DSOD.feature_sizes(size) == expected
