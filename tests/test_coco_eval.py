"""Tests of dsod.evaluation.coco (pycocotools wrappers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsod.evaluation.coco import (
    COCO_METRIC_NAMES,
    annotations_to_coco,
    coco_from_dict,
    coco_image_id_map,
    detections_to_coco_results,
    evaluate_coco,
    evaluate_coco_with_summary,
    load_coco_ground_truth,
)
from dsod.structures import Annotation, Detections


def ann(image_id, boxes, labels, difficult=None) -> Annotation:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    labels = np.asarray(labels, np.int64)
    return Annotation(image_id, f"{image_id}.jpg", 200, 150, boxes, labels, difficult)


def perfect(annotations) -> dict[str, Detections]:
    return {
        a.image_id: Detections(
            a.boxes.copy(), np.linspace(0.9, 0.5, len(a)).astype(np.float32), a.labels.copy()
        )
        for a in annotations
    }


ANNS = [
    ann("img_a", [[10, 10, 50, 60], [100, 20, 180, 140], [5, 100, 20, 118]], [1, 2, 1]),
    ann("img_b", [[0.5, 1.5, 40.5, 80], [60, 60, 70, 75]], [2, 2], difficult=[False, True]),
    ann("img_c", [], []),
]
NAMES = ["cat", "dog"]


def test_ground_truth_dict():
    gt = annotations_to_coco(ANNS, NAMES)
    assert [i["id"] for i in gt["images"]] == [1, 2, 3]
    assert [c["id"] for c in gt["categories"]] == [1, 2]
    assert [c["name"] for c in gt["categories"]] == NAMES
    # img_b box 0: xyxy (0.5, 1.5, 40.5, 80) -> xywh (0.5, 1.5, 40, 78.5), area 40 * 78.5 = 3140
    first_b = gt["annotations"][3]
    assert first_b["image_id"] == 2 and first_b["bbox"] == [0.5, 1.5, 40.0, 78.5]
    assert first_b["area"] == pytest.approx(3140.0) and first_b["iscrowd"] == 0
    assert gt["annotations"][4]["iscrowd"] == 1  # difficult -> crowd (ignored)
    assert len({a["id"] for a in gt["annotations"]}) == 5


def test_results_json_accepted_and_perfect_is_one():
    coco_gt = coco_from_dict(annotations_to_coco(ANNS, NAMES))
    results = detections_to_coco_results(perfect(ANNS), coco_image_id_map(ANNS), [1, 2])
    # Only non-empty detections become results: 3 + 2 boxes (the crowd box is detected too).
    assert len(results) == 5
    assert json.loads(json.dumps(results)) == results  # plain JSON types
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    coco_dt = coco_gt.loadRes([dict(r) for r in results])
    assert len(coco_dt.getAnnIds()) == 5
    stats = evaluate_coco(coco_gt, results)
    assert list(stats) == list(COCO_METRIC_NAMES)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert stats["AR100"] == pytest.approx(1.0)
    assert "segmentation" not in results[0]  # loadRes edits its input; ours was copied


def test_one_of_two_detected():
    # Two gts of one class, one detected exactly. Recall is 1/2 at every IoU threshold ->
    # AR1 = AR10 = AR100 = 0.5. Precision is 1 up to recall 0.5 and 0 beyond, so of the 101
    # recall thresholds 0, 0.01, ..., 1 the 51 from 0 to 0.50 get precision 1:
    # AP = 51/101 = 0.50495... at every IoU threshold (so AP50 = AP75 = AP too).
    anns = [ann("1", [[10, 10, 50, 50], [60, 60, 90, 90]], [1, 1])]
    dets = {
        "1": Detections(
            np.array([[10, 10, 50, 50]], np.float32),
            np.array([0.9], np.float32),
            np.array([1], np.int64),
        )
    }
    coco_gt = coco_from_dict(annotations_to_coco(anns, ["obj"]))
    stats, summary = evaluate_coco_with_summary(
        coco_gt, detections_to_coco_results(dets, coco_image_id_map(anns), [1])
    )
    assert stats["AR100"] == pytest.approx(0.5) and stats["AR1"] == pytest.approx(0.5)
    assert stats["AP"] == pytest.approx(51 / 101) and stats["AP75"] == pytest.approx(51 / 101)
    # gt 1 is 40x40 = 1600 px (medium, found), gt 2 is 30x30 = 900 px (small, missed).
    assert stats["APm"] == pytest.approx(1.0) and stats["ARs"] == 0.0
    assert "Average Precision" in summary and summary.count("\n") == 11


def test_non_contiguous_category_ids():
    # Labels 1, 2 map to COCO categories 3 and 7 (like COCO's id gaps).
    cat_ids = [3, 7]
    gt = annotations_to_coco(ANNS, NAMES, category_ids=cat_ids)
    assert sorted({a["category_id"] for a in gt["annotations"]}) == [3, 7]
    results = detections_to_coco_results(perfect(ANNS), coco_image_id_map(ANNS), cat_ids)
    assert [r["category_id"] for r in results] == [3, 7, 3, 7, 7]
    assert evaluate_coco(coco_from_dict(gt), results)["AP"] == pytest.approx(1.0)
    # The mapping swapped: every detection lands on the wrong class -> AP 0.
    swapped = detections_to_coco_results(perfect(ANNS), coco_image_id_map(ANNS), [7, 3])
    assert evaluate_coco(coco_from_dict(gt), swapped)["AP"] == pytest.approx(0.0)


def test_empty_results_are_zero():
    coco_gt = coco_from_dict(annotations_to_coco(ANNS, NAMES))
    assert detections_to_coco_results({}, coco_image_id_map(ANNS), [1, 2]) == []
    assert evaluate_coco(coco_gt, []) == {k: 0.0 for k in COCO_METRIC_NAMES}


def test_empty_results_follow_pycocotools_where_an_area_range_has_no_ground_truth():
    # No large box here: pycocotools says -1 for APl and ARl, 0 elsewhere; the same as one
    # detection that matches nothing, which loadRes can take.
    small = [ann("img_a", [[10, 10, 50, 60], [5, 100, 20, 118]], [1, 2])]
    coco_gt = coco_from_dict(annotations_to_coco(small, NAMES))
    miss = [{"image_id": 1, "category_id": 1, "bbox": [150, 0, 10, 10], "score": 0.5}]
    expected = evaluate_coco(coco_gt, miss)
    assert expected["APl"] == expected["ARl"] == -1.0 and expected["AP"] == 0.0
    assert evaluate_coco(coco_gt, []) == expected


def test_string_image_ids_are_written_as_the_ground_truth_has_them():
    results = detections_to_coco_results(perfect(ANNS[:1]), {"img_a": "img_0002"}, [1, 2])
    assert {r["image_id"] for r in results} == {"img_0002"}
    results = detections_to_coco_results(perfect(ANNS[:1]), {"img_a": np.int64(7)}, [1, 2])
    assert {type(r["image_id"]) for r in results} == {int}


def test_ground_truth_file_without_area_or_iscrowd_is_completed(tmp_path, caplog):
    gt = annotations_to_coco(ANNS, NAMES)
    for annotation in gt["annotations"]:
        del annotation["area"]
    del gt["annotations"][0]["iscrowd"]
    gt["annotations"].append(
        {"id": 99, "image_id": 3, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}
    )  # no bbox
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with caplog.at_level("WARNING"):
        coco_gt = load_coco_ground_truth(path)
    assert "without area" in caplog.text and "without iscrowd" in caplog.text
    assert "without a usable bbox" in caplog.text and str(path) in caplog.text
    first = coco_gt.loadAnns(1)[0]
    assert first["area"] == 40 * 50 and first["iscrowd"] == 0
    complete = coco_from_dict(annotations_to_coco(ANNS, NAMES))
    results = detections_to_coco_results(perfect(ANNS), coco_image_id_map(ANNS), [1, 2])
    assert evaluate_coco(coco_gt, results) == evaluate_coco(complete, results)


def test_unknown_image_and_bad_label():
    with pytest.raises(KeyError, match="nope"):
        detections_to_coco_results(perfect([ann("nope", [[0, 0, 1, 1]], [1])]), {}, [1])
    with pytest.raises(ValueError, match="labels"):
        detections_to_coco_results(perfect([ann("a", [[0, 0, 1, 1]], [3])]), {"a": 1}, [1, 2])


def test_several_ground_truth_files_score_as_their_union(tmp_path):
    # Two JSONs of one split (ids 1-2 and 3), with areas smaller than the boxes (mask areas,
    # which decide COCO's small/medium/large): scored as pycocotools scores their union.
    gt = annotations_to_coco(ANNS, NAMES)
    for annotation in gt["annotations"]:
        annotation["area"] *= 0.3
    first = {
        **gt,
        "images": gt["images"][:2],
        "annotations": [a for a in gt["annotations"] if a["image_id"] <= 2],
    }
    second = {
        **gt,
        "images": gt["images"][2:],
        "annotations": [dict(a, id=1) for a in gt["annotations"] if a["image_id"] > 2],
    }
    second["annotations"].append(
        {
            "id": 1,
            "image_id": 3,
            "category_id": 2,
            "bbox": [10, 10, 50, 40],
            "area": 600.0,
            "iscrowd": 0,
        }
    )
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, part in zip(paths, (first, second)):
        path.write_text(json.dumps(part))
    union = {
        **gt,
        "annotations": first["annotations"]
        + [dict(a, id=100 + i) for i, a in enumerate(second["annotations"])],
    }
    results = detections_to_coco_results(perfect(ANNS[:2]), coco_image_id_map(ANNS), [1, 2])
    results.append({"image_id": 3, "category_id": 2, "bbox": [12, 10, 50, 40], "score": 0.7})
    merged = load_coco_ground_truth(*paths)
    assert len(merged.getAnnIds()) == len(union["annotations"])
    assert evaluate_coco(merged, results) == evaluate_coco(coco_from_dict(union), results)
