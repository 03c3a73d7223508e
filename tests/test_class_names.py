"""Class names that differ only in case, spacing or Unicode form are one class, wherever
they are read: VOC XML, COCO categories and the config."""

from __future__ import annotations

import json
import logging
import unicodedata

import pytest
from test_coco_data import coco_json, write_coco
from test_voc_data import obj, write_voc, xml

from dsod.config import ConfigError, DataConfig, config_from_dict
from dsod.data.check import check_dataset
from dsod.data.coco import COCODataset, coco_class_names
from dsod.data.errors import AnnotationError, DataError
from dsod.data.voc import VOCDataset, voc_class_names
from dsod.engine.from_data import with_class_names

NFC = unicodedata.normalize("NFC", "känguru")
NFD = unicodedata.normalize("NFD", "känguru")


def _variants(root) -> None:
    """Three 'kangaroo', one each of 'Kangaroo', 'KANGAROO' and ' kan garoo ', and
    'känguru' written NFC in one file and NFD in another."""
    write_voc(
        root,
        {
            "a": xml([obj("kangaroo", (1, 1, 20, 20)), obj("kangaroo", (30, 30, 50, 50))]),
            "b": xml([obj("Kangaroo", (1, 1, 20, 20)), obj("kangaroo", (5, 5, 9, 9))]),
            "c": xml([obj("KANGAROO", (1, 1, 20, 20)), obj(" kan garoo ", (2, 2, 9, 9))]),
            "d": xml([obj(NFC, (1, 1, 20, 20))]),
            "e": xml([obj(NFD, (1, 1, 20, 20))]),
        },
    )


def test_spellings_of_one_class_read_from_the_annotations_are_merged_and_named(tmp_path, caplog):
    _variants(tmp_path)
    assert NFC != NFD
    with caplog.at_level(logging.WARNING):
        names = voc_class_names(tmp_path, ["trainval"])
    assert names == ("kangaroo", NFC)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "one class, 'kangaroo'" in warning
    assert "'kangaroo' (3 objects, e.g. " in warning and "a.xml" in warning
    assert "'Kangaroo' (1 object, e.g. " in warning and "b.xml" in warning
    assert "'KANGAROO' (1 object" in warning and "'kan garoo' (1 object" in warning
    assert "känguru" not in warning  # the two Unicode forms are one name: nothing to say
    # Every box is read, each spelling under its class, the variants named.
    dataset = VOCDataset(tmp_path, ["trainval"], names)
    assert [a.labels.tolist() for a in dataset.annotations] == [[1, 1], [1, 1], [1, 1], [2], [2]]
    variants = [p for p in dataset.problems if p.kind == "class_variant"]
    assert len(variants) == 3 and all(p.severity == "warning" for p in variants)
    assert "class 'Kangaroo' is counted as 'kangaroo'" in variants[0].message
    assert variants[0].file.endswith("b.xml")


def test_training_resolves_one_class_per_name_and_check_dataset_lists_the_variants(tmp_path):
    _variants(tmp_path)
    config = config_from_dict(
        {
            "data": {
                "root": str(tmp_path),
                "train": ["trainval"],
                "test": ["trainval"],
                "class_names": None,
            }
        }
    )
    assert with_class_names(config).data.class_names == ("kangaroo", NFC)
    report = check_dataset(config.data, workers=1)
    variants = [p for p in report.problems if p.kind == "class_variant"]
    assert {p.file.rsplit("/", 1)[1] for p in variants} == {"b.xml", "c.xml"}
    assert [s.boxes for s in report.splits] == [8, 8]


def test_config_class_names_are_cleaned_and_may_not_name_a_class_twice():
    config = config_from_dict({"data": {"class_names": [f" {NFD} ", "dog"]}})
    assert config.data.class_names == (NFC, "dog")
    for names in (["Car", "car"], ["traffic light", "Traffic Light", "bus"], ["a", "a"]):
        with pytest.raises(
            ConfigError,
            match=r"data.class_names in <dict>: names one class "
            r"more than once \('",
        ):
            config_from_dict({"data": {"class_names": names}})
    with pytest.raises(ConfigError, match="a class name is empty"):
        config_from_dict({"data": {"class_names": ["cat", "  "]}})
    with pytest.raises(DataError, match=r"\('Car' and 'car'\)"):
        VOCDataset("/nonexistent", ["trainval"], ["Car", "car"])


def test_configured_names_take_the_annotations_variants(tmp_path):
    write_voc(tmp_path, {"a": xml([obj("Cat", (1, 1, 20, 20)), obj("dog", (5, 5, 9, 9))])})
    dataset = VOCDataset(tmp_path, ["trainval"], ["cat", "dog"])
    assert dataset.annotation(0).labels.tolist() == [1, 2]
    assert [p.kind for p in dataset.problems] == ["class_variant"]


def _coco(tmp_path, categories, annotations=()):
    data = coco_json()
    data["categories"] = categories
    data["annotations"] = [
        {"id": i, "image_id": 7, "category_id": c, "bbox": [1, 1, 5, 5]}
        for i, c in enumerate(annotations, start=1)
    ]
    return write_coco(tmp_path, data)


def test_coco_categories_naming_one_class_twice_are_refused_with_ids_and_counts(tmp_path):
    path = _coco(
        tmp_path,
        [
            {"id": 1, "name": "kangaroo"},
            {"id": 7, "name": "Kangaroo "},
            {"id": 90, "name": "wallaby"},
        ],
        [1, 1, 7, 90],
    )
    with pytest.raises(AnnotationError) as caught:
        COCODataset(path, tmp_path / "val2017")
    message = str(caught.value)
    assert str(path) in message
    assert "'kangaroo' (id 1, 2 boxes) and 'Kangaroo' (id 7, 1 boxes)" in message
    assert "merge them into one category" in message
    with pytest.raises(AnnotationError, match="id 1, 2 boxes"):
        coco_class_names(path)


def test_coco_names_are_cleaned_and_match_the_config_up_to_case(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "name": f"{NFD} "}, {"id": 90, "name": "Wallaby"}], [1, 90])
    assert coco_class_names(path) == (NFC, "Wallaby")
    dataset = COCODataset(path, tmp_path / "val2017", class_names=["wallaby", NFC])
    assert dataset.category_ids == (90, 1)
    [note] = [p for p in dataset.problems if p.kind == "class_variant"]
    assert "'Wallaby' is counted as data.class_names' 'wallaby'" in note.message
    config = DataConfig(
        format="coco", root=str(tmp_path), train=("val2017",), test=("val2017",), class_names=None
    )
    assert json.loads(path.read_text())["categories"][0]["name"] == f"{NFD} "
    assert (
        with_class_names(
            config_from_dict(
                {
                    "data": {
                        "format": "coco",
                        "root": config.root,
                        "train": ["val2017"],
                        "class_names": None,
                    }
                }
            )
        ).num_classes
        == 3
    )


def test_a_test_split_spelling_the_trained_classes_otherwise_is_the_same_classes(tmp_path, caplog):
    from dsod.data.datasets import check_classes

    path = _coco(tmp_path, [{"id": 1, "name": "Kangaroo"}, {"id": 90, "name": "wallaby"}], [1])
    dataset = COCODataset(path, tmp_path / "val2017")
    with caplog.at_level(logging.WARNING):
        check_classes(dataset, 2, ["kangaroo", "wallaby"], "the test split", "checkpoint c")
    assert (
        "the test split spells some classes otherwise than checkpoint c ('Kangaroo' for "
        "'kangaroo')" in caplog.text
    )
    with pytest.raises(DataError, match="orders its classes differently"):
        check_classes(dataset, 2, ["wallaby", "kangaroo"], "the test split", "checkpoint c")
