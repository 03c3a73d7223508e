"""A small procedurally generated detection data set ("shapes"), written in VOC layout.

Each image shows 1-4 filled shapes (``circle``, ``square``, ``triangle``) of random colour on a
textured background (a random base colour, low-frequency colour noise, a few distractor
lines, pixel noise, JPEG compression). Shapes are 15%-50% of the image side; squares are
rotated by up to 20 degrees, triangles (equilateral) by any angle. Later shapes may overlap
earlier ones, but by at most 35% of either box, so no object is hidden. The class can only
be told from the shape, never from the colour.

Layout under ``root`` (as a VOC year folder): ``JPEGImages/<id>.jpg``,
``Annotations/<id>.xml`` (VOC schema; ``bndbox`` in 1-based inclusive pixels, tight around
the drawn shape, amodal under occlusion), ``ImageSets/Main/{train,trainval,test}.txt``
(``trainval`` = ``train``). Image ``i`` of a split is drawn from its own generator seeded
with ``(seed, split, i)``, so the data is a pure function of the parameters.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from dsod.config.labels import object_labels
from dsod.data.errors import SplitNotFoundError

SHAPES_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
LABELS = object_labels(len(SHAPES_CLASSES))  # 1..3: what an image's shapes are drawn from
MARKER = ".dsod_shapes.json"  # written last: its presence means "complete"
_VERSION = 2
_MAX_OVERLAP = 0.2  # of either box's area
_JPEG_QUALITY = 92


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured BGR ``uint8 [size, size, 3]``: base colour + low-frequency noise + lines."""
    base = rng.uniform(40, 215, 3)
    grid = rng.integers(3, 7)
    low = rng.normal(base, 28, (grid, grid, 3)).astype(np.float32)
    low = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    image = np.clip(low, 0, 255, out=low).astype(np.uint8)
    for _ in range(int(rng.integers(0, 3))):
        p1, p2 = rng.integers(-size // 4, size + size // 4, (2, 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(
            image, tuple(int(v) for v in p1), tuple(int(v) for v in p2), colour, 1, cv2.LINE_AA
        )
    return image


def _draw(target: np.ndarray, shape: tuple, value) -> None:
    """Rasterise a shape from :func:`_sample_shape` onto ``target`` with ``value``."""
    if shape[0] == "circle":
        cv2.circle(target, shape[1], shape[2], value, -1)
    else:
        cv2.fillPoly(target, [shape[1]], value)


def _sample_shape(rng: np.random.Generator, label: int, extent: float, size: int) -> tuple | None:
    """Geometry of one shape of class ``label`` (1..3), about ``extent`` pixels across and
    fully inside a ``size x size`` image, for :func:`_draw`; None if it does not fit."""
    if label == 1:
        radius = max(int(round(extent / 2)), 2)
        if 2 * radius + 1 > size:
            return None
        centre = rng.integers(radius, size - radius, 2)
        return ("circle", (int(centre[0]), int(centre[1])), radius)
    if label == 2:  # square, side `extent`, rotated by up to 20 degrees
        angle = math.radians(rng.uniform(-20, 20))
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * extent / 2
    else:  # equilateral triangle of side `extent`, any rotation
        angle = rng.uniform(0, 2 * math.pi)
        turns = np.arange(3) * 2 * math.pi / 3
        corners = np.stack([np.cos(turns), np.sin(turns)], 1) * extent / math.sqrt(3)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    corners = corners @ rot.T
    lo, hi = -corners.min(axis=0), size - 1 - corners.max(axis=0)
    if np.any(hi <= lo):
        return None
    return ("poly", np.rint(corners + rng.uniform(lo, hi)).astype(np.int32))


def _overlaps_too_much(box: np.ndarray, others: list[np.ndarray]) -> bool:
    for other in others:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        inter = max(iw, 0) * max(ih, 0)
        smaller = min(
            (box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1])
        )
        if inter > _MAX_OVERLAP * smaller:
            return True
    return False


def render_shapes_image(
    rng: np.random.Generator, size: int, return_masks: bool = False
) -> tuple[np.ndarray, ...]:
    """Draw one image.

    Returns:
        ``(image, boxes, labels)`` or, with ``return_masks``, ``(image, boxes, labels,
        masks)``: BGR ``uint8 [size, size, 3]``; ``float32 [N, 4]`` absolute ``xyxy``
        (continuous pixels, tight around each shape's own mask); ``int64 [N]`` in ``1..3``
        (index into :data:`SHAPES_CLASSES` plus one); ``bool [N, size, size]`` masks, one per
        shape before anything is drawn over it. ``1 <= N <= 4``.
    """
    image = _background(rng, size)
    smoothed = cv2.blur(image, (9, 9))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    masks: list[np.ndarray] = []
    wanted = int(rng.integers(1, 5))
    for _ in range(wanted * 10):
        if len(boxes) == wanted:
            break
        label = int(rng.integers(LABELS.start, LABELS.stop))
        shape = _sample_shape(rng, label, rng.uniform(0.15, 0.5) * size, size)
        if shape is None:
            continue
        mask = np.zeros((size, size), dtype=np.uint8)
        _draw(mask, shape, 255)
        x, y, w, h = cv2.boundingRect(mask)
        box = np.array([x, y, x + w, y + h], dtype=np.float32)
        if _overlaps_too_much(box, boxes):
            continue
        local = np.array(cv2.mean(smoothed, mask=mask)[:3])
        # A random colour that stands out from the background under it (best of 8 draws).
        colours = rng.integers(0, 256, (8, 3))
        contrast = np.abs(colours - local).sum(axis=1)
        colour = colours[
            int(np.argmax(contrast > 150)) if contrast.max() > 150 else int(np.argmax(contrast))
        ]
        _draw(image, shape, tuple(int(c) for c in colour))
        boxes.append(box)
        labels.append(label)
        masks.append(mask > 0)
    noise = rng.integers(0, 17, image.shape, dtype=np.uint8)  # pixel noise, uniform +-8
    image = cv2.subtract(cv2.add(image, noise), (8, 8, 8, 0))
    out = (
        image,
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
        np.array(labels, dtype=np.int64),
    )
    if return_masks:
        return (*out, np.array(masks, dtype=bool).reshape(-1, size, size))
    return out


def _annotation_xml(image_id: str, size: int, boxes: np.ndarray, labels: np.ndarray) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "shapes"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    ET.SubElement(ET.SubElement(root, "source"), "database").text = "dsod shapes"
    size_el = ET.SubElement(root, "size")
    for key, value in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(size_el, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box, label in zip(boxes, labels):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = SHAPES_CLASSES[int(label) - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        # continuous [x1, x2) pixels -> VOC 1-based inclusive xmin..xmax
        for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bnd, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _generate(out: Path, params: dict) -> None:
    """Write the whole data set into the (new, empty) folder ``out``, the marker last."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    size, next_id = params["image_size"], 1
    for split_code, split in enumerate(("train", "test")):
        ids = []
        for i in range(params[f"num_{split}"]):
            rng = np.random.default_rng([params["seed"], split_code, i])
            image, boxes, labels = render_shapes_image(rng, size)
            image_id = f"{next_id:06d}"
            next_id += 1
            if not cv2.imwrite(
                str(out / "JPEGImages" / f"{image_id}.jpg"),
                image,
                [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY],
            ):
                raise OSError(f"cannot write {out / 'JPEGImages' / image_id}.jpg")
            (out / "Annotations" / f"{image_id}.xml").write_bytes(
                _annotation_xml(image_id, size, boxes, labels)
            )
            ids.append(image_id)
        text = "".join(f"{image_id}\n" for image_id in ids)
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text(text)
        if split == "train":
            (out / "ImageSets" / "Main" / "trainval.txt").write_text(text)
    (out / MARKER).write_text(json.dumps(params, indent=1) + "\n")


DEFAULT_ROOT = Path("datasets/shapes")
"""Where the built-in config keeps the generated set (relative to the working folder)."""


def ensure_shapes_dataset(
    root: str | Path,
    num_train: int,
    num_test: int,
    image_size: int,
    seed: int = 0,
    generate: bool = True,
) -> Path:
    """Make sure ``root`` holds the shapes data set for these parameters; returns ``root``.

    ``generate=False`` writes nothing: a ``root`` without the data set is an error (the
    data-set builder allows writing only at :data:`DEFAULT_ROOT` or with
    ``data.shapes_generate``, so that a mistyped ``data.root`` is an error, not thousands
    of files wherever the typo points).

    Nothing is written when ``root`` already holds it (its marker file matches). Otherwise it
    is generated in a temporary sibling folder that is renamed to ``root`` once complete, so
    an interrupted run leaves no half data set behind; a data set with other parameters is
    replaced. Concurrent callers (e.g. one per process) are safe: the first rename wins.

    Raises:
        FileExistsError: ``root`` exists, is not empty, and is not a shapes data set.
        SplitNotFoundError: ``root`` does not hold it and may not be written.
    """
    root = Path(root)
    params = {
        "version": _VERSION,
        "classes": list(SHAPES_CLASSES),
        "num_train": int(num_train),
        "num_test": int(num_test),
        "image_size": int(image_size),
        "seed": int(seed),
    }
    if _read_marker(root) == params:
        return root
    if not generate:
        what = (
            "does not exist"
            if not root.exists()
            else "holds the shapes data set with other settings"
            if (root / MARKER).exists()
            else "holds no shapes data set"
        )
        raise SplitNotFoundError(
            f"data.root {root} (absolute: {root.absolute()}) {what}. The "
            f"built-in shapes data set is generated only under "
            f"{DEFAULT_ROOT}, or where data.shapes_generate=true allows it"
        )
    if root.exists() and any(root.iterdir()) and not (root / MARKER).exists():
        raise FileExistsError(
            f"{root} is not empty and holds no shapes data set "
            f"(no {MARKER}); choose another data.root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _generate(tmp, params)
        if _read_marker(root) == params:  # another process finished first
            return root
        if root.exists():
            shutil.rmtree(root)  # empty, or a shapes data set with other parameters
        try:
            os.rename(tmp, root)
        except OSError:
            if _read_marker(root) != params:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
