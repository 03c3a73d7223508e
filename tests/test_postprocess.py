import torch

from dsod.box_coder import BoxCoder
from dsod.postprocess import PostProcessor


def _logits_for(probabilities):
    return torch.log(torch.tensor(probabilities)).unsqueeze(0)


def test_nms_on_overlapping_boxes_and_absolute_coordinates():
    # Priors as cxcywh: two heavily overlapping, one apart.
    priors = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.26, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]])
    probs = [[0.1, 0.9, 0.0 + 1e-9], [0.2, 0.8, 1e-9], [0.3, 0.7, 1e-9]]
    post = PostProcessor(priors, BoxCoder(), conf_threshold=0.01, nms_iou=0.45)
    (det,) = post(_logits_for(probs), torch.zeros(1, 3, 4), [(200, 100)])
    # Prior 1 (IoU with prior 0 = .19*.2/(.04+.04-.038) = .905) is suppressed.
    assert det.labels.tolist() == [1, 1]
    torch.testing.assert_close(torch.from_numpy(det.scores), torch.tensor([0.9, 0.7]))
    torch.testing.assert_close(
        torch.from_numpy(det.boxes),
        torch.tensor([[30.0, 15.0, 70.0, 35.0], [130.0, 65.0, 170.0, 85.0]]),
    )


def test_different_classes_are_not_suppressed_and_threshold_applies():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    probs = [[0.495, 0.5, 0.005]]
    post = PostProcessor(priors, BoxCoder(), conf_threshold=0.01)
    (det,) = post(_logits_for(probs), torch.zeros(1, 1, 4), [(10, 10)])
    assert det.labels.tolist() == [1]
    probs = [[0.1, 0.45, 0.45]]
    (det,) = post(_logits_for(probs), torch.zeros(1, 1, 4), [(10, 10)])
    assert sorted(det.labels.tolist()) == [1, 2]


def test_batch_is_split_per_image_and_keep_top_k_applies():
    torch.manual_seed(0)
    priors = torch.rand(50, 4) * 0.5 + 0.25
    logits = torch.randn(3, 50, 5)
    post = PostProcessor(priors, BoxCoder(), conf_threshold=0.0, nms_iou=1.0, keep_top_k=7)
    dets = post(logits, torch.zeros(3, 50, 4), [(10, 10), (20, 20), (30, 30)])
    assert [len(d) for d in dets] == [7, 7, 7]
    for b, det in enumerate(dets):
        expected = logits[b].softmax(-1)[:, 1:].flatten().topk(7).values
        torch.testing.assert_close(torch.from_numpy(det.scores), expected)
        assert (det.boxes <= 10 * (b + 1)).all()


def test_the_detection_comparison_of_the_fast_path_tests():
    """``conftest.assert_same_detections``: rounding may swap near-equal scores and move a
    detection across the score threshold or the top-k cut, nothing more."""
    from types import SimpleNamespace

    import numpy as np
    import pytest
    from conftest import assert_same_detections

    from dsod.structures import Detections

    def dets(rows):  # (label, score, x0)
        return Detections(
            boxes=np.array([[x, 0, x + 10, 10] for _, _, x in rows], np.float32).reshape(-1, 4),
            scores=np.array([s for _, s, _ in rows], np.float32),
            labels=np.array([label for label, _, _ in rows], np.int64),
        )

    cut = SimpleNamespace(conf_threshold=0.01, keep_top_k=4)
    reference = dets([(1, 0.9, 0), (2, 0.50001, 5), (1, 0.5, 20), (2, 0.01003, 40)])
    swapped_and_cut = dets([(1, 0.9, 0), (1, 0.50002, 20), (2, 0.5, 5)])  # 0.01003 under
    assert_same_detections(reference, swapped_and_cut, cut)
    assert_same_detections(swapped_and_cut, reference, cut)
    full = dets([(1, 0.9, 0), (2, 0.5, 5), (1, 0.4, 20), (3, 0.30001, 60)])
    other_at_top_k = dets([(1, 0.9, 0), (2, 0.5, 5), (1, 0.4, 20), (1, 0.30003, 80)])
    assert_same_detections(full, other_at_top_k, cut)
    for changed in (
        dets([(1, 0.9, 0), (2, 0.50001, 5), (2, 0.5, 20)]),  # a label
        dets([(1, 0.9, 0), (2, 0.50001, 5), (1, 0.5, 21)]),  # a box
        dets([(1, 0.9, 0), (2, 0.50001, 5), (1, 0.501, 20)]),  # a score
        dets([(1, 0.9, 0), (2, 0.50001, 5)]),  # one above the threshold lost
        dets(
            [(1, 0.9, 0), (2, 0.50001, 5), (1, 0.5, 20), (2, 0.01003, 40), (2, 0.2, 90)]
        ),  # one more
        dets([]),
    ):
        with pytest.raises(AssertionError):
            assert_same_detections(reference, changed, cut)
    with pytest.raises(AssertionError):  # not full at top-k: the lowest is no excuse
        assert_same_detections(dets([(1, 0.9, 0), (3, 0.3, 60)]), dets([(1, 0.9, 0)]), cut)
