"""COCODataset on a tiny hand-written instances JSON."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dsod.config import DataConfig
from dsod.data.coco import COCODataset
from dsod.data.datasets import ConcatDetectionDataset, build_dataset, coco_split_paths
from dsod.data.errors import AnnotationError, DataError, SplitNotFoundError


def coco_json(extra_annotations: list[dict] | None = None) -> dict:
    return {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 3, "file_name": "b.jpg", "width": 60, "height": 50},  # no boxes
            {"id": 12, "file_name": "c.jpg"},  # no size: read from the file
        ],
        "categories": [
            {"id": 90, "name": "toothbrush"},
            {"id": 1, "name": "person"},
            {"id": 5, "name": "airplane"},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [10, 20, 30.5, 40], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 90, "bbox": [0, 0, 100, 80], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [5, 5, 0, 10], "iscrowd": 0},
            {"id": 4, "image_id": 12, "category_id": 1, "bbox": [1, 2, 3, 4]},
            {"id": 5, "image_id": 7, "category_id": 1, "bbox": [90, 70, 20, 20], "iscrowd": 0},
            {"id": 6, "image_id": 7, "category_id": 77, "bbox": [1, 1, 5, 5], "iscrowd": 0},
        ]
        + (extra_annotations or []),
    }


def write_coco(root: Path, data: dict | str, name: str = "val2017") -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / name).mkdir(exist_ok=True)
    for file, (h, w) in (("a.jpg", (80, 100)), ("b.jpg", (50, 60)), ("c.jpg", (33, 44))):
        cv2.imwrite(str(root / name / file), np.full((h, w, 3), 77, np.uint8))
    path = root / "annotations" / f"instances_{name}.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_non_contiguous_ids_map_to_labels_and_back(tmp_path):
    data = COCODataset(write_coco(tmp_path, coco_json()), tmp_path / "val2017")
    assert data.category_ids == (1, 5, 90)
    assert data.class_names == ("person", "airplane", "toothbrush")
    ann = data.annotation(0)
    assert ann.image_id == "7" and data.image_id_to_coco_id["7"] == 7
    assert ann.labels.tolist() == [2, 3, 1]
    assert [data.category_ids[label - 1] for label in ann.labels] == [5, 90, 1]


def test_boxes_crowd_empty_images_and_problems(tmp_path):
    data = COCODataset(
        write_coco(tmp_path, coco_json()), tmp_path / "val2017", keep_difficult=False
    )
    assert [a.image_id for a in data.annotations] == ["7", "3", "12"]
    ann = data.annotation(0)
    np.testing.assert_allclose(ann.boxes, [[10, 20, 40.5, 60], [0, 0, 100, 80], [90, 70, 100, 80]])
    assert ann.difficult.tolist() == [False, True, False]  # crowd flagged, kept for scoring
    assert sorted(p.kind for p in data.problems) == [
        "box_clipped",
        "missing_size",
        "unknown_class",
        "zero_size_box",
    ]
    assert len(data.annotation(1)) == 0  # image without boxes kept
    image, targets = data.load(1)
    assert image.shape == (50, 60, 3) and len(targets) == 0 and targets.boxes.shape == (0, 4)
    _, targets = data.load(0)
    assert targets.labels.tolist() == [2, 1]  # crowd left out of training targets
    assert (data.annotation(2).width, data.annotation(2).height) == (44, 33)


def test_class_names_must_match_json(tmp_path):
    path = write_coco(tmp_path, coco_json())
    reordered = COCODataset(
        path, tmp_path / "val2017", class_names=["airplane", "person", "toothbrush"]
    )
    assert reordered.category_ids == (5, 1, 90)
    assert reordered.annotation(0).labels.tolist() == [1, 3, 2]
    with pytest.raises(DataError, match=r"dog.*toothbrush"):
        COCODataset(path, tmp_path / "val2017", class_names=["person", "airplane", "dog"])


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"images": [', "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"images": [], "annotations": []}', "categories"),
    ],
)
def test_malformed_json_names_file(tmp_path, text, match):
    path = write_coco(tmp_path, text)
    with pytest.raises(AnnotationError, match=match) as info:
        COCODataset(path, tmp_path / "val2017")
    assert "instances_val2017.json" in str(info.value)


def test_missing_json_is_split_not_found(tmp_path):
    with pytest.raises(SplitNotFoundError, match="instances_x.json"):
        COCODataset(tmp_path / "instances_x.json", tmp_path)


def test_build_dataset_coco_entries(tmp_path):
    write_coco(tmp_path, coco_json(), "val2017")
    write_coco(tmp_path, coco_json(), "train2017")
    assert coco_split_paths(tmp_path, "ann/x.json:imgs") == (
        tmp_path / "ann/x.json",
        tmp_path / "imgs",
    )
    config = DataConfig(
        format="coco",
        root=str(tmp_path),
        train=("train2017", "val2017"),
        test=("annotations/instances_val2017.json:val2017",),
        class_names=None,
        train_difficult=False,
    )
    test = build_dataset(config, "test")
    assert isinstance(test, COCODataset) and len(test) == 3 and test.keep_difficult
    train = build_dataset(config, "train")
    assert isinstance(train, ConcatDetectionDataset) and len(train) == 6
    assert train.category_ids == (1, 5, 90) and not train.keep_difficult
    assert train.annotation(3).image_path == str(tmp_path / "val2017" / "a.jpg")


def test_integral_float_category_ids_are_read(tmp_path):
    data = coco_json()
    for category in data["categories"]:
        category["id"] = float(category["id"])  # 90.0, 1.0, 5.0: as pandas writes them
    for annotation in data["annotations"]:
        annotation["category_id"] = float(annotation["category_id"])
    floats = COCODataset(write_coco(tmp_path, data), tmp_path / "val2017")
    ints = COCODataset(write_coco(tmp_path / "i", coco_json()), tmp_path / "i" / "val2017")
    assert floats.category_ids == ints.category_ids == (1, 5, 90)
    assert [a.labels.tolist() for a in floats.annotations] == [
        a.labels.tolist() for a in ints.annotations
    ]
    data["categories"][0]["id"] = 2.5
    with pytest.raises(AnnotationError, match="lacks an integer id"):
        COCODataset(write_coco(tmp_path, data), tmp_path / "val2017")


def test_an_image_file_listed_under_two_ids_is_named(tmp_path):
    data = coco_json()
    data["images"].append({"id": 40, "file_name": "a.jpg", "width": 100, "height": 80})
    dataset = COCODataset(write_coco(tmp_path, data), tmp_path / "val2017")
    [problem] = [p for p in dataset.problems if p.kind == "duplicate"]
    assert problem.severity == "warning" and problem.file.endswith("instances_val2017.json")
    assert "image file a.jpg is listed under 2 ids (7, 40)" in problem.message
