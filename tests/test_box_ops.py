"""The package's IoU matrix on numpy boxes: torchvision's orientation and numbers."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou as torchvision_box_iou

from dsod.box_ops import box_iou


def test_iou_worked_by_hand_in_torchvisions_orientation():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], dtype=np.float64)
    others = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 5, 5]], dtype=np.float64)
    iou = box_iou(boxes, others)
    assert iou.shape == (2, 3)  # [N, M]: one row per box of the first set
    # [5,5,15,15] with [0,0,10,10]: 25 / (100 + 100 - 25); with [10,0,20,10]: 25 / 175;
    # with [0,0,5,5]: they touch at a corner only.
    np.testing.assert_array_equal(iou, [[1.0, 0.0, 0.25], [25 / 175, 25 / 175, 0.0]])


def test_iou_agrees_with_torchvision_and_its_transpose():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, (2, 7, 2))
    sizes = rng.uniform(1, 50, (2, 7, 2))
    a = np.concatenate([corners[0], corners[0] + sizes[0]], 1)
    b = np.concatenate([corners[1, :5], corners[1, :5] + sizes[1, :5]], 1)
    expected = torchvision_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-12)
    np.testing.assert_array_equal(box_iou(b, a), box_iou(a, b).T)


def test_given_areas_replace_the_ones_from_the_corners_and_empty_boxes_give_zero():
    boxes = np.array([[0, 0, 2, 2]], dtype=np.float32)
    others = np.array([[0, 0, 2, 2], [1, 1, 1, 1]], dtype=np.float32)
    # with the first one's area given as 8 instead of 4: 4 / (4 + 8 - 4)
    np.testing.assert_array_equal(
        box_iou(boxes, others, np.array([8, 0], np.float32)), [[0.5, 0.0]]
    )
    empty = np.zeros((1, 4), np.float32)
    assert box_iou(empty, empty).tolist() == [[0.0]]
    assert box_iou(boxes, others).dtype == np.float32
