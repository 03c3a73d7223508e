"""Properties of dsod.data.transforms: box validity, label alignment, geometry, determinism."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsod.config import AugmentConfig
from dsod.data import transforms as T

MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
OFF = AugmentConfig(
    photometric=False, expand_prob=0.0, crop=False, flip_prob=0.0, random_interpolation=False
)
FAST = settings(max_examples=25, deadline=None)


def only(**changes) -> AugmentConfig:
    """Every step off except ``changes``."""
    return dataclasses.replace(OFF, **changes)


@st.composite
def samples(draw, max_boxes: int = 6):
    """(image uint8 [H, W, 3], boxes float32 [N, 4] abs xyxy, labels int64 [N] = 1..N)."""
    h = draw(st.integers(12, 80))
    w = draw(st.integers(12, 80))
    n = draw(st.integers(0, max_boxes))
    boxes = []
    for _ in range(n):
        x1 = draw(st.floats(0, w - 2))
        y1 = draw(st.floats(0, h - 2))
        x2 = draw(st.floats(x1 + 1, w))
        y2 = draw(st.floats(y1 + 1, h))
        boxes.append([x1, y1, x2, y2])
    seed = draw(st.integers(0, 2**31 - 1))
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return (
        image,
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
        np.arange(1, n + 1, dtype=np.int64),
    )


def check_valid(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, size: int, in_labels: np.ndarray
) -> None:
    assert image.shape == (3, size, size) and image.dtype == np.float32
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert labels.dtype == np.int64 and labels.shape == (boxes.shape[0],)
    assert np.all(boxes >= 0) and np.all(boxes <= 1)
    assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])
    assert len(set(labels.tolist())) == len(labels)  # no box duplicated
    assert set(labels.tolist()) <= set(in_labels.tolist())


def expected_boxes(t: T.TrainTransform, boxes: np.ndarray, labels: np.ndarray, image_wh):
    """Replay the recorded geometry on the input boxes: ``{label: normalised box}``."""
    rec, size = t.last, t.size
    w, h = image_wh
    b = np.clip(boxes.astype(np.float64), 0, [w, h, w, h]) + [*rec.offset, *rec.offset]
    x0, y0, x1, y1 = rec.crop
    out = {}
    for box, label in zip(b, labels):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if not (x0 <= cx <= x1 and y0 <= cy <= y1) or rec.part is None:
            continue
        px0, py0, px1, py1 = rec.part
        dl, dt, dr, db = rec.dest
        gx, gy = (dr - dl) / (px1 - px0), (db - dt) / (py1 - py0)
        bx = np.clip(box, [px0, py0, px0, py0], [px1, py1, px1, py1])
        m = (
            np.array(
                [
                    dl + (bx[0] - px0) * gx,
                    dt + (bx[1] - py0) * gy,
                    dl + (bx[2] - px0) * gx,
                    dt + (bx[3] - py0) * gy,
                ]
            )
            / size
        )
        if rec.flip:
            m = np.array([1 - m[2], m[1], 1 - m[0], m[3]])
        m = m.astype(np.float32)  # the transform's output precision and float32 slack
        if min(m[2] - m[0], m[3] - m[1]) >= t.min_box_pixels / size - 1e-6:
            out[int(label)] = m
    return out


@FAST
@given(samples(), st.sampled_from([32, 48]), st.integers(0, 2**32 - 1))
def test_full_pipeline_outputs_valid(sample, size, seed):
    image, boxes, labels = sample
    t = T.TrainTransform(size, AugmentConfig(), seed=seed)
    for _ in range(3):
        check_valid(*t(image, boxes, labels), size, labels)


@FAST
@given(samples(), st.integers(0, 2**32 - 1))
def test_flip_only_mirrors_each_box(sample, seed):
    image, boxes, labels = sample
    h, w = image.shape[:2]
    out, b, lab = T.TrainTransform(40, only(flip_prob=1.0), seed=seed)(image, boxes, labels)
    norm = boxes / np.array([w, h, w, h], dtype=np.float32)
    mirror = np.stack([1 - norm[:, 2], norm[:, 1], 1 - norm[:, 0], norm[:, 3]], 1)
    big = np.minimum(mirror[:, 2] - mirror[:, 0], mirror[:, 3] - mirror[:, 1]) >= 1 / 40 - 1e-6
    np.testing.assert_array_equal(lab, labels[big])  # boxes under one output pixel are dropped
    np.testing.assert_allclose(b, mirror[lab - 1], atol=1e-5)
    resized = cv2.resize(image, (40, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, T.normalize_to_chw(resized[:, ::-1], MEAN))


@FAST
@given(samples(), st.integers(0, 2**32 - 1))
def test_crop_keeps_centred_boxes_inside_their_projection(sample, seed):
    image, boxes, labels = sample
    size = 48
    t = T.TrainTransform(
        size, only(crop=True, expand_prob=0.5, flip_prob=0.5, random_interpolation=True), seed=seed
    )
    for _ in range(4):
        _, b, lab = t(image, boxes, labels)
        check_valid(_, b, lab, size, labels)
        want = expected_boxes(t, boxes, labels, image.shape[1::-1])
        assert sorted(want) == lab.tolist()  # exactly the boxes whose centre is in the crop
        for box, label in zip(b, lab):
            np.testing.assert_allclose(box, want[int(label)], atol=1e-5)
        # Against the reference's exact window map: inside the projection, within half a pixel.
        rec = t.last
        x0, y0, x1, y1 = rec.crop
        shift = np.array([*rec.offset, *rec.offset]) - [x0, y0, x0, y0]
        proj = (boxes[lab - 1] + shift) / [x1 - x0, y1 - y0, x1 - x0, y1 - y0]
        if rec.flip:
            proj = np.stack([1 - proj[:, 2], proj[:, 1], 1 - proj[:, 0], proj[:, 3]], 1)
        tol = 0.5 / size + 1e-5
        assert np.all(b[:, :2] >= proj[:, :2] - tol) and np.all(b[:, 2:] <= proj[:, 2:] + tol)


@FAST
@given(samples(max_boxes=2), st.integers(0, 255), st.integers(0, 2**32 - 1))
def test_mean_subtraction_exact_for_constant_image(sample, value, seed):
    image, boxes, labels = sample
    image[:] = value
    mean = (104.25, 117.0, 122.5)
    cfg = dataclasses.replace(AugmentConfig(photometric=False, expand_prob=0.0), mean_bgr=mean)
    out, _, _ = T.TrainTransform(32, cfg, seed=seed)(image, boxes, labels)
    want = np.float32(value) - np.array(mean, dtype=np.float32)
    np.testing.assert_array_equal(out, np.broadcast_to(want[:, None, None], out.shape))


@FAST
@given(samples(), st.integers(0, 2**32 - 1))
def test_expand_keeps_pixel_content_and_boxes(sample, seed):
    image, boxes, labels = sample
    size = 64
    t = T.TrainTransform(size, only(expand_prob=1.0), seed=seed)
    out, b, lab = t(image, boxes, labels)
    dl, dt, dr, db = t.last.dest
    assert t.last.part == (
        *t.last.offset,
        t.last.offset[0] + image.shape[1],
        t.last.offset[1] + image.shape[0],
    )
    inner = cv2.resize(image, (dr - dl, db - dt), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out[:, dt:db, dl:dr], T.normalize_to_chw(inner, MEAN))
    rest = np.ones((size, size), dtype=bool)
    rest[dt:db, dl:dr] = False
    assert np.all(out[:, rest] == 0)  # the mean fill
    want = expected_boxes(t, boxes, labels, image.shape[1::-1])
    assert sorted(want) == lab.tolist()
    for box, label in zip(b, lab):
        np.testing.assert_allclose(box, want[int(label)], atol=1e-5)


def test_expand_object_pixels_land_inside_their_box():
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 30, 40], [40, 20, 75, 55]], dtype=np.float32)
    colours = [(255, 0, 0), (0, 255, 0)]
    for (x1, y1, x2, y2), colour in zip(boxes.astype(int), colours):
        image[y1:y2, x1:x2] = colour
    t = T.TrainTransform(200, only(expand_prob=1.0, expand_max_ratio=2.0), seed=3)
    for _ in range(5):
        out, b, lab = t(image, boxes, np.array([1, 2]))
        pixels = out.transpose(1, 2, 0) + MEAN
        gain = (t.last.dest[2] - t.last.dest[0]) / 80  # upscaling blurs edges over ~gain px
        m = int(np.ceil(gain)) + 1
        for box, label in zip(b * 200, lab):
            x1, y1, x2, y2 = np.round(box).astype(int)
            patch = pixels[y1 + m : y2 - m, x1 + m : x2 - m]
            assert patch.size > 0
            assert np.all(patch == np.array(colours[label - 1], dtype=np.float32))


def test_seeded_transforms_are_reproducible():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 60, 70], [50, 20, 118, 88]], dtype=np.float32)
    labels = np.array([1, 2])
    runs = []
    for seed in (7, 7, 8):
        t = T.TrainTransform(64, AugmentConfig(), seed=seed)
        runs.append([t(image, boxes, labels) for _ in range(6)])
    t.set_seed(7)
    runs.append([t(image, boxes, labels) for _ in range(6)])
    same = lambda a, b: all(np.array_equal(x, y) for u, v in zip(a, b) for x, y in zip(u, v))
    assert same(runs[0], runs[1]) and same(runs[0], runs[3])
    assert not same(runs[0], runs[2])
    t2 = T.TrainTransform(64, AugmentConfig(), rng=np.random.default_rng(7))
    assert same(runs[0], [t2(image, boxes, labels) for _ in range(6)])


def test_workers_get_distinct_reproducible_streams(monkeypatch):
    import torch.utils.data as tud

    image = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    boxes, labels = np.array([[5, 5, 40, 40]], dtype=np.float32), np.array([1])

    def run(worker_seed):
        info = type("Info", (), {"seed": worker_seed})()
        monkeypatch.setattr(tud, "get_worker_info", lambda: info)
        t = T.TrainTransform(32, AugmentConfig(), seed=1)
        return [t(image, boxes, labels)[0] for _ in range(4)]

    a, b, c = run(100), run(100), run(101)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_degenerate_boxes_are_dropped_with_their_labels():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 50, 50], [60, 60, 60.3, 90], [20, 70, 40, 95]], dtype=np.float32)
    _, b, lab = T.TrainTransform(50, OFF)(image, boxes, np.array([3, 1, 2]))
    np.testing.assert_array_equal(lab, [3, 2])
    np.testing.assert_allclose(b, boxes[[0, 2]] / 100, atol=1e-6)


def test_photometric_steps_match_reference_ranges():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 216, (32, 32, 3), dtype=np.uint8)
    base = dict(
        brightness_delta=0.0, contrast_range=(1.0, 1.0), saturation_range=(1.0, 1.0), hue_delta=0.0
    )
    t = T.TrainTransform(8, only(photometric=True, **{**base, "brightness_delta": 32.0}), seed=0)
    deltas = set()
    for _ in range(40):  # brightness only: one additive delta per image, |delta| <= 32
        d = t.photometric(image).astype(int) - image
        assert np.all(d == d.flat[0]) and abs(d.flat[0]) <= 32
        deltas.add(int(d.flat[0]))
    assert 0 in deltas and len(deltas) > 5  # p 0.5, and varied
    t = T.TrainTransform(
        8, only(photometric=True, **{**base, "contrast_range": (0.5, 1.5)}), seed=0
    )
    for _ in range(40):  # contrast only: v -> round(alpha * v), 0.5 <= alpha <= 1.5
        out = t.photometric(image).astype(float)
        unsaturated = out < 255
        alpha = out[unsaturated].sum() / image[unsaturated].sum()
        assert 0.49 <= alpha <= 1.51
        np.testing.assert_allclose(out, np.clip(np.rint(image * alpha), 0, 255), atol=1.01)
    hsv_in = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(int)
    t = T.TrainTransform(8, only(photometric=True, **{**base, "hue_delta": 18.0}), seed=0)
    for _ in range(20):  # hue only: H moves by at most 18 steps (36 degrees), S and V kept
        hsv_out = cv2.cvtColor(t.photometric(image), cv2.COLOR_BGR2HSV).astype(int)
        strong = (hsv_in[..., 1] > 120) & (hsv_in[..., 2] > 120)
        shift = np.mod(hsv_out[..., 0] - hsv_in[..., 0] + 90, 180) - 90
        assert np.all(np.abs(shift[strong]) <= 18 + 3)


def test_test_transform_and_image_to_tensor():
    image = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    boxes = np.array([[1, 2, 30, 20]], dtype=np.float32)
    out, b, lab = T.TestTransform(24, MEAN)(image, boxes, np.array([4]))
    assert out.shape == (3, 24, 24) and out.dtype == np.float32 and b is boxes
    want = cv2.resize(image, (24, 24), interpolation=cv2.INTER_LINEAR).astype(np.float32) - MEAN
    np.testing.assert_array_equal(out, want.transpose(2, 0, 1))
    tensor = T.image_to_tensor(image, 24)
    assert isinstance(tensor, torch.Tensor) and torch.equal(tensor, torch.from_numpy(out))


def test_rejects_bad_input():
    t = T.TrainTransform(16, AugmentConfig())
    with pytest.raises(ValueError):
        t(np.zeros((10, 10), dtype=np.uint8), np.zeros((0, 4)), np.zeros((0,)))
    with pytest.raises(ValueError):
        t(np.zeros((10, 10, 3), dtype=np.uint8), np.zeros((2, 4)), np.zeros((1,)))
