"""VOC XML parsing and VOCDataset on tiny hand-written data sets."""

from __future__ import annotations

import string
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsod.config import DataConfig
from dsod.data.datasets import build_dataset
from dsod.data.errors import AnnotationError, DataError, SplitNotFoundError
from dsod.data.voc import VOCDataset, parse_voc_xml

CLASSES = ("cat", "dog")


def obj(name: str, box: tuple, difficult: int | None = 0, truncated: int | None = None) -> str:
    tags = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    extra = "" if difficult is None else f"<difficult>{difficult}</difficult>"
    extra += "" if truncated is None else f"<truncated>{truncated}</truncated>"
    return f"<object><name>{name}</name>{extra}<bndbox>{tags}</bndbox></object>"


def xml(
    objects: list[str], size: tuple[int, int] | None = (100, 80), filename: str = "x.jpg"
) -> str:
    size_tag = (
        ""
        if size is None
        else (f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    )
    return (
        f"<annotation><folder>VOC</folder><filename>{filename}</filename>{size_tag}"
        f"{''.join(objects)}</annotation>"
    )


def write_voc(
    root: Path,
    items: dict[str, str],
    split: str = "trainval",
    image_size: tuple[int, int] = (100, 80),
    images: bool = True,
) -> None:
    """A VOC folder at ``root`` with XML ``items`` {id: xml text} and matching images."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, text in items.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
        if images:
            w, h = image_size
            cv2.imwrite(
                str(root / "JPEGImages" / f"{image_id}.jpg"), np.full((h, w, 3), 128, np.uint8)
            )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(items) + "\n")


def test_parse_exact_boxes_and_labels(tmp_path):
    text = xml(
        [
            obj("dog", (1, 1, 50, 40)),
            obj("cat", ("10", "20.5", "273.5", "70"), 1, 1),
            obj("cat", (5, 6, 7, 8), None),
        ],
        size=(300, 80),
    )
    (tmp_path / "a.xml").write_text(text)
    ann, problems = parse_voc_xml(tmp_path / "a.xml", CLASSES)
    assert problems == []
    assert ann.image_id == "a" and (ann.width, ann.height) == (300, 80)
    np.testing.assert_array_equal(
        ann.boxes, np.array([[0, 0, 50, 40], [9, 19.5, 273.5, 70], [4, 5, 7, 8]], np.float32)
    )
    assert ann.boxes.dtype == np.float32 and ann.labels.dtype == np.int64
    assert ann.labels.tolist() == [2, 1, 1]
    assert ann.difficult.tolist() == [False, True, False]
    assert ann.image_path == str(tmp_path.parent / "JPEGImages" / "a.jpg")


@pytest.mark.parametrize("box", [(504, 337, 503, 337), (30, 20, 10, 40), (10, 40, 30, 39)])
def test_negative_size_box_reported_and_dropped(tmp_path, box):
    (tmp_path / "z.xml").write_text(
        xml([obj("cat", (1, 1, 10, 10)), obj("cat", box)], size=(640, 480))
    )
    ann, problems = parse_voc_xml(tmp_path / "z.xml", CLASSES)
    assert len(ann) == 1 and ann.boxes[0].tolist() == [0, 0, 10, 10]
    assert [(p.kind, p.severity) for p in problems] == [("zero_size_box", "warning")]
    assert problems[0].file == str(tmp_path / "z.xml")


@pytest.mark.parametrize("box", [(504, 337, 504, 337), (10, 40, 30, 40)])
def test_one_pixel_box_is_kept_with_a_warning(tmp_path, box):
    # VOC boxes include both edges: xmin == xmax is one pixel wide, and the devkit counts it.
    (tmp_path / "p.xml").write_text(xml([obj("cat", box)], size=(640, 480)))
    ann, problems = parse_voc_xml(tmp_path / "p.xml", CLASSES)
    x1, y1, x2, y2 = box
    assert ann.boxes.tolist() == [[x1 - 1, y1 - 1, x2, y2]]
    assert [(p.kind, p.severity) for p in problems] == [("one_pixel_box", "warning")]


def test_unknown_class_and_bad_coordinates_reported(tmp_path):
    (tmp_path / "u.xml").write_text(
        xml(
            [
                obj("horse", (1, 1, 10, 10)),
                obj("dog", ("a", 1, 10, 10)),
                obj("dog", ("nan", 1, 10, 10)),
                "<object><name>cat</name></object>",
                obj("dog", (2, 2, 20, 20)),
            ]
        )
    )
    ann, problems = parse_voc_xml(tmp_path / "u.xml", CLASSES)
    assert ann.labels.tolist() == [2]
    kinds = [p.kind for p in problems]
    assert kinds == ["unknown_class", "bad_coordinates", "bad_coordinates", "bad_coordinates"]
    assert "horse" in problems[0].message


def test_boxes_outside_clipped_or_dropped(tmp_path):
    (tmp_path / "o.xml").write_text(
        xml(
            [
                obj("cat", (-5, 1, 120, 50)),
                obj("dog", (101, 1, 130, 50)),
                obj("dog", (1, 1, 100, 80)),
            ],
            size=(100, 80),
        )
    )
    ann, problems = parse_voc_xml(tmp_path / "o.xml", CLASSES)
    np.testing.assert_array_equal(ann.boxes, [[0, 0, 100, 50], [0, 0, 100, 80]])
    assert [p.kind for p in problems] == ["box_clipped", "box_outside"]


def test_missing_size_read_from_image(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    cv2.imwrite(str(tmp_path / "JPEGImages" / "s.jpg"), np.zeros((30, 40, 3), np.uint8))
    (tmp_path / "Annotations" / "s.xml").write_text(xml([obj("cat", (1, 1, 39, 29))], None))
    ann, problems = parse_voc_xml(tmp_path / "Annotations" / "s.xml", CLASSES)
    assert (ann.width, ann.height) == (40, 30)
    assert [p.kind for p in problems] == ["missing_size"]
    (tmp_path / "JPEGImages" / "s.jpg").unlink()
    with pytest.raises(AnnotationError, match="s.xml"):
        parse_voc_xml(tmp_path / "Annotations" / "s.xml", CLASSES)


def test_the_filename_tag_finds_only_the_ids_own_image(tmp_path):
    # p2's image has a suffix of its own, which its <filename> names; p1's annotation was
    # copied from another image's and names that image, and p1's own image is missing.
    write_voc(
        tmp_path,
        {
            "p1": xml([obj("cat", (1, 1, 9, 9))], filename="other.jpg"),
            "p2": xml([obj("cat", (1, 1, 9, 9))], filename="p2.jfif"),
        },
        images=False,
    )
    image = np.zeros((80, 100, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "JPEGImages" / "other.jpg"), image)
    (tmp_path / "JPEGImages" / "p2.jfif").write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
    data = VOCDataset(tmp_path, ["trainval"], CLASSES)
    assert data.annotation(0).image_path == str(tmp_path / "JPEGImages" / "p1.jpg")
    assert data.annotation(1).image_path == str(tmp_path / "JPEGImages" / "p2.jfif")
    [note] = data.problems
    assert note.file == str(tmp_path / "Annotations" / "p1.xml") and note.kind == "missing_image"
    assert (
        "the image p1.jpg (or p1 with another image suffix) does not exist; <filename> "
        "names other.jpg, another image, which is not used for it" in note.message
    )
    with pytest.raises(DataError, match=r"p1.jpg: the file does not exist"):
        data.load(0)


def test_malformed_xml_names_file(tmp_path):
    (tmp_path / "bad.xml").write_text("<annotation><size><width>3</size>")
    with pytest.raises(AnnotationError, match="bad.xml") as info:
        parse_voc_xml(tmp_path / "bad.xml", CLASSES)
    assert "malformed XML" in str(info.value) and isinstance(info.value, DataError)


def test_dataset_subdir_splits_difficult_and_load(tmp_path):
    write_voc(
        tmp_path / "VOC2007",
        {
            "000001": xml([obj("cat", (1, 1, 50, 40)), obj("dog", (10, 10, 60, 70), 1)]),
            "000002": xml([obj("dog", (504, 337, 503, 337))]),
            "000003": "<annotation><broken",
        },
    )
    with pytest.raises(AnnotationError, match="000003.xml"):
        VOCDataset(tmp_path, ["VOC2007/trainval"], CLASSES, strict=True)
    data = VOCDataset(tmp_path, ["VOC2007/trainval"], CLASSES, keep_difficult=False)
    assert len(data) == 2 and data.class_names == CLASSES
    assert [(p.kind, p.severity) for p in data.problems] == [
        ("zero_size_box", "warning"),
        ("malformed_annotation", "error"),
    ]
    full = data.annotation(0)
    assert full.difficult.tolist() == [False, True]  # evaluation keeps every box
    image, targets = data.load(0)
    assert image.shape == (80, 100, 3) and image.dtype == np.uint8
    assert targets.labels.tolist() == [1] and targets.boxes.tolist() == [[0, 0, 50, 40]]
    targets.boxes[0, 0] = 99  # the copy is writable and the ground truth is not touched
    assert data.annotations[0].boxes[0, 0] == 0
    with pytest.raises(ValueError):
        data.annotations[0].boxes[0, 0] = 1
    assert len(data.annotation(1)) == 0  # all boxes dropped but the image is kept


def test_missing_root_and_split_are_clear(tmp_path):
    with pytest.raises(SplitNotFoundError, match="README"):
        VOCDataset(tmp_path / "nowhere", ["trainval"], CLASSES)
    write_voc(tmp_path, {"a": xml([])})
    with pytest.raises(SplitNotFoundError, match=r"ImageSets/Main/test\.txt"):
        VOCDataset(tmp_path, ["test"], CLASSES)


def test_build_dataset_from_config(tmp_path):
    write_voc(tmp_path / "VOC2007", {"a": xml([obj("dog", (1, 1, 9, 9), 1)])})
    write_voc(tmp_path / "VOC2007", {"b": xml([obj("cat", (1, 1, 9, 9))])}, split="test")
    config = DataConfig(
        format="voc",
        root=str(tmp_path),
        train=("VOC2007/trainval",),
        test=("VOC2007/test",),
        class_names=CLASSES,
        train_difficult=False,
    )
    train, test = build_dataset(config, "train"), build_dataset(config, "test")
    assert [a.image_id for a in train.annotations] == ["a"]
    assert len(train.training_targets(0)) == 0 and len(train.annotation(0)) == 1
    assert [a.image_id for a in test.annotations] == ["b"]


def test_build_dataset_generates_the_shapes_set_as_voc(tmp_path):
    config = DataConfig(
        format="shapes",
        root=str(tmp_path / "shapes"),
        train=("train",),
        test=("test",),
        class_names=("circle", "square", "triangle"),
        shapes_train_images=5,
        shapes_test_images=3,
        shapes_image_size=48,
        shapes_generate=True,
    )
    train, test = build_dataset(config, "train"), build_dataset(config, "test")
    assert len(train) == 5 and len(test) == 3
    assert all(len(a) >= 1 and set(a.labels.tolist()) <= {1, 2, 3} for a in train.annotations)


_fragments = st.sampled_from(
    [
        "<annotation>",
        "</annotation>",
        "<size>",
        "</size>",
        "<width>",
        "</width>",
        "<height>",
        "</height>",
        "<object>",
        "</object>",
        "<name>cat</name>",
        "<name>dog</name>",
        "<bndbox>",
        "</bndbox>",
        "<xmin>",
        "</xmin>",
        "<ymin>",
        "</ymin>",
        "<xmax>",
        "</xmax>",
        "<ymax>",
        "</ymax>",
        "<difficult>1</difficult>",
        "<difficult>x</difficult>",
        "&amp;",
        "&bogus;",
        "<!--",
        "-->",
        "<?xml version='1.0' encoding='nope'?>",
        "\x00",
        "0",
        "1",
        "-3",
        "12.5",
        "1e309",
        "nan",
        "100",
        "640",
        "7",
        " ",
    ]
)
_coordinates = st.one_of(
    st.integers(-50, 700),
    st.integers(0, 120),
    st.floats(-100, 800),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=4),
).map(str)
_sizes = st.integers(0, 7).flatmap(
    lambda k: _coordinates if k == 0 else st.integers(1, 700).map(str)
)


@st.composite
def _mangled_xml(draw) -> str:
    """Random fragment soup, or a plausible annotation with random values, maybe cut."""
    if draw(st.integers(0, 3)) == 0:
        return "".join(draw(st.lists(_fragments, max_size=40)))
    plausible = st.builds(
        lambda x, y, w, h: (x, y, x + w, y + h),
        st.integers(-20, 700),
        st.integers(-20, 700),
        st.integers(-5, 300),
        st.integers(-5, 300),
    )
    boxes = draw(
        st.lists(
            st.one_of(
                plausible,
                plausible,
                st.tuples(_coordinates, _coordinates, _coordinates, _coordinates),
            ),
            max_size=6,
        )
    )
    text = xml(
        [obj(draw(st.sampled_from(["cat", "dog", "dog", "cow", ""])), b) for b in boxes],
        size=(draw(_sizes), draw(_sizes)) if draw(st.integers(0, 4)) else None,
    )
    if draw(st.integers(0, 3)):
        return text
    cut = draw(st.integers(0, len(text)))
    return text[:cut] + draw(st.text(max_size=5)) + text[cut:]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=_mangled_xml())
def test_property_valid_boxes_or_data_error(tmp_path, text):
    path = tmp_path / "Annotations" / "h.xml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        ann, problems = parse_voc_xml(path, CLASSES)
    except DataError as error:
        assert "h.xml" in str(error)
        return
    assert ann.width >= 1 and ann.height >= 1
    b = ann.boxes
    assert b.dtype == np.float32 and b.shape == (len(ann.labels), 4)
    assert np.all(b[:, 0] < b[:, 2]) and np.all(b[:, 1] < b[:, 3])
    assert np.all(b[:, :2] >= 0)
    assert np.all(b[:, 2] <= ann.width) and np.all(b[:, 3] <= ann.height)
    assert set(ann.labels.tolist()) <= {1, 2}
    assert all(p.severity in ("error", "warning") for p in problems)


@pytest.mark.parametrize(
    "namespace", ['xmlns="http://example.org/voc"', 'xmlns:v="http://example.org/voc"']
)
def test_a_namespaced_xml_keeps_its_boxes(tmp_path, namespace):
    text = xml([obj("dog", (1, 1, 50, 40)), obj("cat", (10, 20, 30, 40))])
    text = text.replace("<annotation>", f"<annotation {namespace}>")
    if ":v=" in namespace:  # every element in the prefixed namespace
        text = text.replace("<", "<v:").replace("<v:/", "</v:")
    write_voc(tmp_path, {"ns": text})
    ann, problems = parse_voc_xml(tmp_path / "Annotations" / "ns.xml", CLASSES)
    assert problems == [] and (ann.width, ann.height) == (100, 80)
    assert ann.labels.tolist() == [2, 1] and ann.boxes[0].tolist() == [0, 0, 50, 40]
    from dsod.data.voc import voc_class_names

    assert voc_class_names(tmp_path, ["trainval"]) == ("cat", "dog")


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_a_split_listed_twice_is_refused_naming_it(tmp_path, fmt):
    from test_coco_data import coco_json, write_coco

    if fmt == "voc":
        write_voc(tmp_path, {"a": xml([obj("cat", (1, 1, 9, 9))])})
        entries = ("trainval", "./trainval")
    else:
        write_coco(tmp_path, coco_json())
        entries = ("val2017", "annotations/instances_val2017.json:val2017")
    config = DataConfig(
        format=fmt,
        root=str(tmp_path),
        train=entries,
        test=entries[:1],
        class_names=None if fmt == "coco" else CLASSES,
    )
    with pytest.raises(
        DataError,
        match=rf"data.train lists the split '{entries[1]}' twice "
        rf"\(as '{entries[0]}' and '{entries[1]}'\): its images "
        rf"would count twice; list it once",
    ):
        build_dataset(config, "train")
    from dsod.data.check import check_dataset

    report = check_dataset(config, workers=1)
    assert report.exit_code == 1
    assert [p.file for p in report.errors if p.kind == "bad_config"] == ["data.train"]
