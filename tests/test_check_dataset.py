"""tools/check_dataset.py: exit status and report on small broken data sets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import yaml
from conftest import load_tool

from dsod.config import DataConfig
from dsod.data.check import check_dataset

GOOD = (
    "<annotation><size><width>100</width><height>80</height></size><object><name>cat"
    "</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>50</xmax>"
    "<ymax>40</ymax></bndbox></object></annotation>"
)
ZERO_BOX = GOOD.replace("<xmax>50</xmax>", "<xmax>0</xmax>")  # xmax < xmin


def tool_main():
    return load_tool("check_dataset").main


def make_voc(
    root: Path,
    xmls: dict[str, str],
    split: str,
    image_sizes: dict[str, tuple[int, int]] | None = None,
) -> None:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, text in xmls.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        w, h = (image_sizes or {}).get(image_id, (100, 80))
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), np.zeros((h, w, 3), np.uint8))
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(xmls) + "\n")


def write_config(tmp_path: Path, root: Path, **data) -> Path:
    section = {
        "format": "voc",
        "root": str(root),
        "train": ["trainval"],
        "test": ["test"],
        "class_names": ["cat", "dog"],
        **data,
    }
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump({"name": "check", "data": section}))
    return path


def test_warnings_only_exit_zero(tmp_path, capsys):
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD, "b": ZERO_BOX}, "trainval")
    make_voc(root, {"c": GOOD, "d": GOOD}, "test", image_sizes={"d": (90, 80)})
    assert tool_main()([str(write_config(tmp_path, root)), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "zero_size_box" in out and "b.xml" in out
    assert "no_objects" in out  # b's only box was dropped
    assert "size_mismatch" in out and "d.jpg" in out
    assert "0 error(s), 3 warning(s)" in out


def test_missing_or_truncated_image_exits_non_zero(tmp_path, capsys):
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD, "b": GOOD, "c": GOOD}, "trainval")
    make_voc(root, {"c": GOOD}, "test")
    (root / "JPEGImages" / "a.jpg").unlink()
    data = (root / "JPEGImages" / "b.jpg").read_bytes()
    (root / "JPEGImages" / "b.jpg").write_bytes(data[: len(data) // 2])
    assert tool_main()([str(write_config(tmp_path, root))]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any("missing_image" in line and "a.jpg" in line for line in lines)
    assert any("unreadable_image" in line and "b.jpg" in line for line in lines)
    assert any("train_test_overlap" in line for line in lines)
    assert "2 error(s)" in out


def test_missing_split_and_malformed_xml_are_errors(tmp_path):
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD, "bad": "<annotation><size>"}, "trainval")
    report = check_dataset(
        DataConfig(
            format="voc",
            root=str(root),
            train=("trainval",),
            test=("test",),
            class_names=("cat", "dog"),
        )
    )
    kinds = {(p.severity, p.kind) for p in report.problems}
    assert ("error", "missing_split") in kinds
    assert ("error", "malformed_annotation") in kinds
    assert report.exit_code == 1
    assert [(s.entry, s.images, s.usable) for s in report.splits] == [
        ("trainval", 1, True),
        ("test", 0, False),
    ]


def test_coco_malformed_json_and_bad_config(tmp_path, capsys):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "instances_val.json").write_text('{"images": [1,')
    config = write_config(
        tmp_path, tmp_path / "coco", format="coco", train=["val"], test=["val"], class_names=None
    )
    assert tool_main()([str(config)]) == 1
    assert "malformed JSON" in capsys.readouterr().out
    assert tool_main()([str(config), "data.nonsense=1"]) == 2


def test_coco_clean_set_exits_zero(tmp_path, capsys):
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    (coco / "val").mkdir()
    cv2.imwrite(str(coco / "val" / "x.png"), np.zeros((20, 30, 3), np.uint8))
    (coco / "annotations" / "instances_val.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "x.png", "width": 30, "height": 20}],
                "categories": [{"id": 3, "name": "car"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}],
            }
        )
    )
    config = write_config(
        tmp_path, coco, format="coco", train=["val"], test=[], class_names=["car"]
    )
    assert tool_main()([str(config)]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out


def test_generated_shapes_set_checks_clean(tmp_path, capsys):
    path = write_config(
        tmp_path,
        tmp_path / "shapes",
        format="shapes",
        train=["train"],
        class_names=["circle", "square", "triangle"],
        shapes_train_images=4,
        shapes_test_images=2,
        shapes_image_size=48,
        shapes_generate=True,
    )
    assert tool_main()([str(path), "--workers", "1"]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out


def test_unknown_format_is_usage_error(tmp_path):
    assert tool_main()([str(write_config(tmp_path, tmp_path, format="yolo"))]) == 2


def test_size_mismatch_says_the_image_is_resized(tmp_path):
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD}, "trainval", image_sizes={"a": (50, 40)})  # XML: 100x80
    make_voc(root, {"c": GOOD}, "test")
    report = check_dataset(
        DataConfig(
            format="voc",
            root=str(root),
            train=("trainval",),
            test=("test",),
            class_names=("cat", "dog"),
        )
    )
    [problem] = [p for p in report.problems if p.kind == "size_mismatch"]
    assert problem.severity == "warning" and problem.file.endswith("a.jpg")
    assert "is 50x40 but its annotation says 100x80" in problem.message
    assert "resize it to 100x80" in problem.message
    assert report.exit_code == 0


def test_every_box_dropped_is_an_error(tmp_path, capsys):
    # Class names the annotations do not use: every box is dropped as an unknown class.
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD, "b": GOOD}, "trainval")
    make_voc(root, {"c": GOOD}, "test")
    assert tool_main()([str(write_config(tmp_path, root, class_names=["bird", "fish"]))]) == 1
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2
    assert (
        "[no_objects] data.train ('trainval'): none of its 2 image(s) has a usable box"
        in errors[0]
    )
    assert "data.test ('test')" in errors[1] and "class_names" in errors[1]
    assert "trainval: 2 images, 0 boxes (0 difficult/crowd)  (UNUSABLE)" in out
    assert "2 error(s), 6 warning(s): NOT usable" in out


def test_one_entry_without_boxes_among_others_is_fine(tmp_path):
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD}, "trainval")
    make_voc(root, {"b": ZERO_BOX}, "extra")  # its only box is dropped
    make_voc(root, {"c": GOOD}, "test")
    report = check_dataset(
        DataConfig(
            format="voc",
            root=str(root),
            train=("trainval", "extra"),
            test=("test",),
            class_names=("cat", "dog"),
        )
    )
    assert report.errors == [] and all(s.usable for s in report.splits)


def _coco(tmp_path: Path, name: str, content: dict) -> Path:
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    (coco / name).mkdir(exist_ok=True)
    cv2.imwrite(str(coco / name / "x.png"), np.zeros((20, 30, 3), np.uint8))
    (coco / "annotations" / f"instances_{name}.json").write_text(json.dumps(content))
    return coco


def test_coco_without_images_or_annotations_is_an_error(tmp_path):
    categories = [{"id": 3, "name": "car"}]
    coco = _coco(tmp_path, "empty", {"images": [], "categories": categories, "annotations": []})
    _coco(
        tmp_path,
        "nolist",
        {
            "images": [{"id": 1, "file_name": "x.png", "width": 30, "height": 20}],
            "categories": categories,
        },
    )
    data = DataConfig(
        format="coco", root=str(coco), train=("empty",), test=("nolist",), class_names=("car",)
    )
    report = check_dataset(data)
    assert [(p.severity, p.kind, p.file) for p in report.errors] == [
        ("error", "missing_split", "data.train entry 'empty'"),
        ("error", "no_objects", "data.test ('nolist')"),
    ]
    assert "has no images" in report.errors[0].message
    assert "none of its 1 image(s) has a usable box" in report.errors[1].message
    assert [s.usable for s in report.splits] == [False, False] and report.exit_code == 1


def test_no_train_split_is_an_error(tmp_path):
    root = tmp_path / "voc"
    make_voc(root, {"c": GOOD}, "test")
    report = check_dataset(
        DataConfig(
            format="voc", root=str(root), train=(), test=("test",), class_names=("cat", "dog")
        )
    )
    assert [(p.kind, p.file) for p in report.errors] == [("bad_config", "data.train")]
    assert "nothing to train on" in report.errors[0].message


def test_exif_rotations_the_size_cannot_confirm_are_flagged(tmp_path):
    from PIL import Image

    root = tmp_path / "voc"
    square = GOOD.replace(
        "<width>100</width><height>80</height>", "<width>80</width><height>80</height>"
    )
    make_voc(
        root,
        {"sq": square, "wide": GOOD, "half": GOOD, "plain": square},
        "trainval",
        image_sizes={"sq": (80, 80), "plain": (80, 80)},
    )
    for image_id, orientation in (("sq", 6), ("wide", 6), ("half", 3)):
        path = root / "JPEGImages" / f"{image_id}.jpg"
        exif = Image.Exif()
        exif[0x0112] = orientation
        with Image.open(path) as image:
            image.load()
            image.save(path, exif=exif)
    report = check_dataset(
        DataConfig(
            format="voc", root=str(root), train=("trainval",), test=(), class_names=("cat",)
        ),
        workers=1,
    )
    flagged = {Path(p.file).stem: p for p in report.problems if p.kind == "exif_orientation"}
    # A 100x80 picture turned 90 degrees is 80x100: its size says which frame its boxes use.
    assert sorted(flagged) == ["half", "sq"]
    assert "EXIF orientation 6: turned 90 degrees clockwise" in flagged["sq"].message
    assert "EXIF orientation 3: turned 180 degrees" in flagged["half"].message
    assert all(p.severity == "warning" for p in flagged.values())
