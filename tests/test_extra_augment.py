"""augment.extra: albumentations transforms by name, boxes moving exactly with the pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dsod.config import AugmentConfig, ConfigError, config_from_dict
from dsod.data.extra_augment import ExtraAugment
from dsod.data.transforms import TrainTransform


def _image_with_square(box: tuple[int, int, int, int], size=(60, 80)) -> np.ndarray:
    image = np.zeros((*size, 3), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = (255, 0, 0)  # blue in BGR
    return image


def _bounds(image: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(image[:, :, 0] > 127)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_a_flip_mirrors_the_boxes_exactly():
    extra = ExtraAugment([{"name": "HorizontalFlip", "p": 1.0}])
    image = _image_with_square((10, 5, 30, 25))
    out, boxes, labels = extra(image, np.array([[10, 5, 30, 25.0]]), np.array([2]), seed=0)
    np.testing.assert_allclose(boxes, [[80 - 30, 5, 80 - 10, 25]], atol=1e-4)
    assert labels.tolist() == [2]
    assert _bounds(out) == [50, 5, 70, 25]
    assert (out[:, :, 0] > 127).sum() == 400 and out[10, 60].tolist() == [255, 0, 0]  # BGR kept


def test_a_shift_moves_boxes_with_the_pixels_and_drops_what_leaves_the_image():
    extra = ExtraAugment([{"name": "Affine", "translate_px": {"x": 7, "y": -3}, "p": 1.0}])
    image = _image_with_square((10, 5, 30, 25))
    boxes = np.array([[10, 5, 30, 25.0], [75, 40, 79, 50], [2, 1, 6, 2]])
    out, moved, labels = extra(image, boxes, np.array([1, 2, 3]), seed=0)
    # the first moves by (7, -3); the second (x to 82-86) and the third (y to -2..-1) leave
    # the 80x60 image and are dropped
    np.testing.assert_allclose(moved, [[17, 2, 37, 22]], atol=1e-4)
    assert labels.tolist() == [1]
    assert _bounds(out) == [17, 2, 37, 22]


def test_clipped_boxes_stay_inside_the_image():
    extra = ExtraAugment([{"name": "Affine", "translate_px": {"x": -5, "y": 0}, "p": 1.0}])
    out, moved, labels = extra(
        _image_with_square((2, 10, 20, 30)), np.array([[2, 10, 20, 30.0]]), np.array([1]), seed=0
    )
    np.testing.assert_allclose(moved, [[0, 10, 15, 30]], atol=1e-4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            [{"name": "GaussBlur"}],
            (
                r"augment.extra\[0\]: 'GaussBlur' is not an albumentations transform; "
                r"did you mean .*GaussianBlur"
            ),
        ),
        (
            [{"name": "CLAHE"}, {"name": "GaussianBlur", "blurlimit": 3}],
            r"augment.extra\[1\]: GaussianBlur has no argument 'blurlimit'; "
            r"did you mean blur_limit",
        ),
        ([{"name": "GaussianBlur", "p": "often"}], r"augment.extra\[0\]: GaussianBlur: "),
        ([{"p": 0.2}], r"augment.extra\[0\]: expected a mapping with a name"),
    ],
)
def test_a_bad_extra_is_a_config_error_naming_it_when_the_training_transform_is_built(
    extra, message
):
    config = config_from_dict({"augment": {"extra": extra}})  # each entry is a mapping
    with pytest.raises(ConfigError, match=message):
        TrainTransform(40, config.augment)


def test_an_extra_entry_that_is_no_mapping_is_refused_when_the_config_is_read():
    with pytest.raises(ConfigError, match=r"augment.extra in <dict>\[0\]: expected a mapping"):
        config_from_dict({"augment": {"extra": ["GaussianBlur"]}})


def test_the_training_transform_applies_the_extra_before_ssds_steps_reproducibly():
    cfg = dataclasses.replace(
        AugmentConfig(),
        photometric=False,
        expand_prob=0.0,
        crop=False,
        flip_prob=0.0,
        random_interpolation=False,
        extra=({"name": "HorizontalFlip", "p": 1.0},),
    )
    image = _image_with_square((10, 5, 30, 25))
    first = TrainTransform(40, cfg, seed=3)(image, np.array([[10, 5, 30, 25.0]]), np.array([1]))
    # flipped on the 80x60 image, then warped to 40x40
    np.testing.assert_allclose(first[1], [[50 / 80, 5 / 60, 70 / 80, 25 / 60]], atol=1e-5)
    again = TrainTransform(40, cfg, seed=3)(image, np.array([[10, 5, 30, 25.0]]), np.array([1]))
    np.testing.assert_array_equal(first[0], again[0])
