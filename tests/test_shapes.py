"""The procedurally generated shapes data set: determinism, VOC layout, boxes, idempotence."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest

from dsod.data import shapes
from dsod.data.shapes import SHAPES_CLASSES, ensure_shapes_dataset, render_shapes_image


def read_voc(path: Path) -> tuple[int, int, list[tuple[str, int, list[int]]]]:
    root = ET.parse(path).getroot()
    size = root.find("size")
    objects = []
    for obj in root.findall("object"):
        box = [int(obj.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        objects.append((obj.find("name").text, int(obj.find("difficult").text), box))
    return int(size.find("width").text), int(size.find("height").text), objects


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_writes_voc_layout(tmp_path):
    root = ensure_shapes_dataset(tmp_path / "shapes", 12, 5, 64, seed=3)
    assert root == tmp_path / "shapes"
    train = (root / "ImageSets/Main/train.txt").read_text().split()
    test = (root / "ImageSets/Main/test.txt").read_text().split()
    assert len(train) == 12 and len(test) == 5 and not set(train) & set(test)
    assert (root / "ImageSets/Main/trainval.txt").read_text().split() == train
    counts = np.zeros(3, dtype=int)
    for image_id in train + test:
        image = cv2.imread(str(root / "JPEGImages" / f"{image_id}.jpg"))
        assert image is not None and image.shape == (64, 64, 3)
        width, height, objects = read_voc(root / "Annotations" / f"{image_id}.xml")
        assert (width, height) == (64, 64) and 1 <= len(objects) <= 4
        for name, difficult, (x1, y1, x2, y2) in objects:
            assert name in SHAPES_CLASSES and difficult == 0
            counts[SHAPES_CLASSES.index(name)] += 1
            assert 1 <= x1 < x2 <= 64 and 1 <= y1 < y2 <= 64  # 1-based, inclusive
            side = max(x2 - x1 + 1, y2 - y1 + 1)
            assert 0.1 * 64 <= side <= 0.7 * 64
    assert np.all(counts > 0)


def test_generation_is_deterministic(tmp_path):
    a = ensure_shapes_dataset(tmp_path / "a", 6, 3, 48, seed=1)
    b = ensure_shapes_dataset(tmp_path / "b", 6, 3, 48, seed=1)
    c = ensure_shapes_dataset(tmp_path / "c", 6, 3, 48, seed=2)
    assert all_files(a) == all_files(b)
    assert all_files(a) != all_files(c)


def test_second_call_does_not_regenerate_but_new_parameters_do(tmp_path):
    root = ensure_shapes_dataset(tmp_path / "s", 4, 2, 48)
    marker = root / shapes.MARKER
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    ensure_shapes_dataset(tmp_path / "s", 4, 2, 48)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    ensure_shapes_dataset(tmp_path / "s", 5, 2, 48)
    assert json.loads(marker.read_text())["num_train"] == 5
    assert len((root / "ImageSets/Main/train.txt").read_text().split()) == 5
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 7


def test_interrupted_generation_is_not_taken_as_complete(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = shapes.render_shapes_image

    def failing(rng, size, return_masks=False):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(rng, size, return_masks)

    monkeypatch.setattr(shapes, "render_shapes_image", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes_dataset(tmp_path / "s", 4, 2, 48)
    assert not (tmp_path / "s").exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(shapes, "render_shapes_image", real)
    root = ensure_shapes_dataset(tmp_path / "s", 4, 2, 48)
    assert (root / shapes.MARKER).exists()
    assert len(list((root / "Annotations").glob("*.xml"))) == 6


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        ensure_shapes_dataset(tmp_path / "mine", 2, 1, 32)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("seed", range(12))
def test_boxes_are_tight_around_the_drawn_shapes(seed):
    image, boxes, labels, masks = render_shapes_image(
        np.random.default_rng(seed), 96, return_masks=True
    )
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert 1 <= len(boxes) == len(labels) == len(masks) <= 4
    assert set(labels.tolist()) <= {1, 2, 3}
    for box, mask in zip(boxes.astype(int), masks):
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
    # The last shape is drawn on top: its pixels are one flat colour (up to pixel noise)
    # that differs from the background just outside its box.
    top = masks[-1]
    inner = cv2.erode(top.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    colour = np.median(image[inner], axis=0)
    assert np.all(np.abs(image[inner].astype(int) - colour) <= 16)  # noise is +-8
    ring = cv2.dilate(top.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~top
    others = masks[:-1].any(axis=0) if len(masks) > 1 else np.zeros_like(top)
    ring &= ~others
    if ring.sum() > 20:
        assert np.abs(image[ring].astype(int).mean(axis=0) - colour).sum() > 40
