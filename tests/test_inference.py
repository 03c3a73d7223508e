"""dsod.inference.Detector and dsod.visualize.draw_detections on a tiny model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL

from dsod.config import config_from_dict, config_to_dict
from dsod.data.errors import ImageReadError
from dsod.engine.builders import build_model
from dsod.engine.checkpoint import CheckpointError, save_atomic
from dsod.inference import DetectionResult, Detector
from dsod.visualize import class_colour, draw_detections


def tiny_config(**model):
    return config_from_dict(
        {
            "model": {**TINY_MODEL, **model},
            "priors": {"steps": None},
            "data": {"class_names": ["a", "b"]},
            "test": {"batch_size": 2},
        }
    )


def save_tiny(path, **model):
    torch.manual_seed(0)
    cfg = tiny_config(**model)
    net = build_model(cfg)
    save_atomic({"model": net.state_dict(), "config": config_to_dict(cfg)}, path)
    return cfg, net


def test_from_checkpoint_boxes_inside_non_square_images(tmp_path):
    save_tiny(tmp_path / "m.pth")
    detector = Detector.from_checkpoint(tmp_path / "m.pth", score_threshold=0.0)
    assert detector.class_names == ["a", "b"]
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (50, 130, 3), dtype=np.uint8)
    tall = rng.integers(0, 255, (140, 45, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "tall.png"), tall)
    results = detector([wide, tmp_path / "tall.png", wide])  # 3 images: batches of 2 and 1
    assert isinstance(results, list) and len(results) == 3
    for result, (w, h) in zip(results, [(130, 50), (45, 140), (130, 50)]):
        assert isinstance(result, DetectionResult) and len(result) > 0
        assert result.image_size == (w, h)
        assert result.boxes.shape == (len(result), 4) and result.boxes.dtype == np.float32
        assert (result.boxes[:, [0, 2]] >= 0).all() and (result.boxes[:, [0, 2]] <= w).all()
        assert (result.boxes[:, [1, 3]] >= 0).all() and (result.boxes[:, [1, 3]] <= h).all()
        assert set(result.labels.tolist()) <= {1, 2}
        assert result.class_names == [["a", "b"][lab - 1] for lab in result.labels.tolist()]
        assert np.all(np.diff(result.scores) <= 0)
    assert results[1].source == str(tmp_path / "tall.png")
    np.testing.assert_allclose(results[0].boxes, results[2].boxes, atol=1e-3)  # batch-neutral
    single = detector(wide)  # one image in, one result out
    assert isinstance(single, DetectionResult)
    np.testing.assert_allclose(single.boxes, results[0].boxes, atol=1e-4)


def test_score_threshold_filters_and_matches_in_memory_model(tmp_path):
    cfg, net = save_tiny(tmp_path / "m.pth")
    image = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    net.train()
    low = Detector(net, cfg, score_threshold=0.0)(image)
    assert net.training  # an in-memory model goes back to the mode it was in
    threshold = float(np.median(low.scores))
    high = Detector.from_checkpoint(tmp_path / "m.pth", score_threshold=threshold)(image)
    assert 0 < len(high) < len(low)
    assert (high.scores >= threshold).all()
    kept = low.scores >= threshold
    np.testing.assert_allclose(high.boxes, low.boxes[kept][: len(high)], atol=1e-4)


def test_reduced_precision_runs_the_network_in_bf16_with_close_scores(tmp_path):
    cfg, _ = save_tiny(tmp_path / "m.pth")
    image = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    seen = {}
    for amp in ("none", "bf16"):
        detector = Detector.from_checkpoint(tmp_path / "m.pth", score_threshold=0.0, amp=amp)
        first_conv = next(m for m in detector.model.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(
            lambda m, i, out, amp=amp: seen.__setitem__(f"{amp} dtype", out.dtype)
        )
        detector.model.register_forward_hook(
            lambda m, i, out, amp=amp: seen.__setitem__(amp, out[0].float().softmax(-1))
        )
        result = detector(image)
        assert len(result) > 0 and result.boxes.dtype == np.float32
    assert seen["none dtype"] == torch.float32 and seen["bf16 dtype"] == torch.bfloat16
    difference = (seen["bf16"] - seen["none"]).abs().max().item()
    assert 0 < difference < 0.05  # rounded, not another function
    with pytest.raises(ValueError, match="amp must be one of none, bf16, fp16"):
        Detector.from_checkpoint(tmp_path / "m.pth", amp="fp8")


def test_checkpoint_decoded_with_other_priors_or_input_is_refused(tmp_path):
    save_tiny(tmp_path / "m.pth")
    for override, named in (
        ("priors.min_sizes=[8,13,24,35,45,56]", "priors.min_sizes"),
        ("augment.mean_bgr=[0,0,0]", "augment.mean_bgr"),
    ):
        with pytest.raises(CheckpointError, match=named):
            Detector.from_checkpoint(tmp_path / "m.pth", overrides=[override])
    # The same settings spelled in a config of one's own are accepted.
    assert len(Detector.from_checkpoint(tmp_path / "m.pth", config=tiny_config()).class_names) == 2


def test_checkpoint_of_another_config_names_keys(tmp_path):
    save_tiny(tmp_path / "m.pth", growth_rate=4)
    with pytest.raises(CheckpointError) as info:
        Detector.from_checkpoint(tmp_path / "m.pth", config=tiny_config())
    message = str(info.value)
    assert str(tmp_path / "m.pth") in message and "mismatched shapes" in message
    assert "backbone." in message


def test_overrides_and_bad_inputs(tmp_path):
    save_tiny(tmp_path / "m.pth")
    detector = Detector.from_checkpoint(tmp_path / "m.pth", overrides=["test.nms_iou=0.3"])
    assert detector.config.test.nms_iou == 0.3
    with pytest.raises(ImageReadError, match="missing.jpg"):
        detector(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="uint8"):
        detector(np.zeros((10, 10, 3), np.float32))
    gray = detector(np.zeros((30, 20), np.uint8))
    assert gray.image_size == (20, 30)


def test_draw_detections_marks_boxes_in_class_colours():
    image = np.full((80, 120, 3), 255, np.uint8)
    result = DetectionResult(
        boxes=np.array([[10, 30, 60, 70], [70, 5, 110, 50]], np.float32),
        scores=np.array([0.9, 0.5], np.float32),
        labels=np.array([1, 2], np.int64),
        class_names=["a", "b"],
        image_size=(120, 80),
    )
    out = draw_detections(image, result)
    assert out.shape == image.shape and out is not image
    assert (image == 255).all()  # the input is left alone
    assert class_colour(1) != class_colour(2)
    assert tuple(out[50, 10].tolist()) == class_colour(1)  # left edge of box 1
    assert tuple(out[30, 110].tolist()) == class_colour(2)  # right edge of box 2
    assert (out[72:, :] == 255).all()  # nothing below the boxes
