"""Damaged data and inputs: capped, named, survived (each case fails without its fix)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import load_tool, tiny_config
from test_check_dataset import GOOD, make_voc, write_config

from dsod.apps.eval_tool import run_eval
from dsod.config import DataConfig, load_config
from dsod.data.check import check_dataset
from dsod.data.coco import COCODataset
from dsod.data.datasets import build_dataset, build_test_set
from dsod.data.errors import DataError
from dsod.data.voc import VOCDataset, voc_class_names
from dsod.engine.trainer import Trainer, train
from dsod.evaluation.voc_files import read_voc_results, write_voc_results
from dsod.structures import Detections


def _shapes(tmp_path: Path, **sections):
    config = tiny_config(tmp_path, **sections)
    build_dataset(config.data, "train")
    build_dataset(config.data, "test")
    return config


def _cut_xml(paths) -> None:
    for path in paths:
        text = path.read_text()
        path.write_text(text[: len(text) // 2])


def test_unparsable_training_annotations_over_the_limit_stop_before_the_first_step(tmp_path):
    config = _shapes(tmp_path)
    train_ids = (tmp_path / "shapes" / "ImageSets" / "Main" / "train.txt").read_text().split()
    _cut_xml(tmp_path / "shapes" / "Annotations" / f"{i}.xml" for i in train_ids[:5])
    with pytest.raises(
        DataError,
        match=r"5 of the 16 images of the training split .* "
        r"annotation file that cannot be used",
    ):
        Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    assert not (tmp_path / "out" / "checkpoints").exists()
    # Within the limit, the run goes on without them.
    loose = tiny_config(tmp_path, train={"max_bad_sample_fraction": 0.5})
    assert (
        len(Trainer(loose, tmp_path / "out2", torch.device("cpu"), progress=False).samples) == 11
    )


def test_evaluation_refuses_a_test_split_mostly_left_out_unless_asked(tmp_path, capsys):
    config = _shapes(tmp_path, solver={"max_iter": 1})
    train(config, tmp_path / "run", progress=False)
    test_ids = (tmp_path / "shapes" / "ImageSets" / "Main" / "test.txt").read_text().split()
    _cut_xml(tmp_path / "shapes" / "Annotations" / f"{i}.xml" for i in test_ids[:3])
    checkpoint = tmp_path / "run" / "checkpoints" / "final.pth"
    with pytest.raises(DataError, match=r"3 of the 4 images of the test split .*--partial"):
        run_eval(config, checkpoint, out_dir=tmp_path / "eval", progress=False)
    figures = run_eval(
        config,
        checkpoint,
        out_dir=tmp_path / "eval",
        progress=False,
        json_path=tmp_path / "eval" / "figures.json",
        partial=True,
    )
    assert "left out: 3 of the 4 test images" in capsys.readouterr().out
    saved = json.loads((tmp_path / "eval" / "figures.json").read_text())
    assert len(saved["left_out_images"]) == 3 == len(figures["left_out_images"])
    assert saved["images"] == 1


def test_unreadable_images_are_counted_once_per_file(tmp_path):
    config = _shapes(tmp_path, solver={"max_iter": 40}, train={"max_bad_sample_fraction": 0.1})
    train_ids = (tmp_path / "shapes" / "ImageSets" / "Main" / "train.txt").read_text().split()
    for image_id in train_ids[:2]:
        (tmp_path / "shapes" / "JPEGImages" / f"{image_id}.jpg").write_bytes(b"broken")
    trainer = Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    with pytest.raises(
        DataError,
        match=r"^2 of the 16 training samples \(12.5%\) could not "
        r"be read, .* \(0 annotation file\(s\) unusable, 2 "
        r"image",
    ):
        trainer.run()
    # 40 steps of 4 would draw each bad file ten times: the count stays at the two files.
    assert trainer.bad.count == 2


def test_a_byte_order_mark_in_a_split_list_is_not_part_of_the_first_id(tmp_path):
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD, "b": GOOD}, "trainval")
    split = root / "ImageSets" / "Main" / "trainval.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes().replace(b"\n", b"\r\n"))
    dataset = VOCDataset(root, ["trainval"], ["cat", "dog"])
    assert [a.image_id for a in dataset.annotations] == ["a", "b"]


def test_class_names_that_no_file_name_can_hold_get_safe_result_files(tmp_path):
    names = ["cat/dog", "cat_dog", "a:b*c"]
    detections = {
        "img": Detections(
            np.array([[1, 2, 30, 40], [5, 5, 9, 9.0]]), np.array([0.9, 0.5]), np.array([1, 3])
        )
    }
    paths = write_voc_results(tmp_path, ["img"], detections, names)
    assert [p.name for p in paths] == [
        "comp4_det_test_cat_dog.txt",
        "comp4_det_test_cat_dog_2.txt",
        "comp4_det_test_a_b_c.txt",
    ]
    mapping = json.loads((tmp_path / "class_files.json").read_text())
    assert mapping["cat/dog"] == "comp4_det_test_cat_dog.txt"
    back = read_voc_results(tmp_path, names)
    assert back["img"].labels.tolist() == [1, 3]


def test_a_failed_output_keeps_the_figures(tmp_path, capsys):
    config = _shapes(tmp_path, solver={"max_iter": 1})
    train(config, tmp_path / "run", progress=False)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "voc_results").write_text("a file where the results folder should be")
    with pytest.raises(DataError, match=r"could not write the detections.*figures above"):
        run_eval(
            config,
            tmp_path / "run" / "checkpoints" / "final.pth",
            out_dir=out,
            json_path=out / "figures.json",
            progress=False,
        )
    assert "VOC07 11-point mAP" in capsys.readouterr().out
    assert "mAP07" in json.loads((out / "figures.json").read_text())["voc"]


def test_check_dataset_agrees_with_training_on_one_unreadable_image(tmp_path, capsys):
    root = tmp_path / "voc"
    ids = {f"i{n:03d}": GOOD for n in range(120)}
    make_voc(root, ids, "trainval")
    make_voc(root, {"t": GOOD}, "test")
    data = (root / "JPEGImages" / "i007.jpg").read_bytes()
    (root / "JPEGImages" / "i007.jpg").write_bytes(data[:-20])  # training skips it: 1 of 120
    assert (
        load_tool("check_dataset").main([str(write_config(tmp_path, root)), "--workers", "1"]) == 0
    )
    out = capsys.readouterr().out
    assert "WARNING [unreadable_image]" in out and "i007.jpg" in out and "0 error(s)" in out
    # Two of them exceed 1% of 120: training would stop, so the check says so.
    (root / "JPEGImages" / "i008.jpg").write_bytes(b"")
    report = check_dataset(load_config(tmp_path / "check.yaml"), workers=1)
    assert report.exit_code == 1
    assert sorted(p.kind for p in report.errors) == ["unreadable_image", "unreadable_image"]


def test_one_missing_demo_input_among_many_is_skipped(tmp_path, capsys):
    config = _shapes(tmp_path, solver={"max_iter": 1})
    train(config, tmp_path / "run", progress=False)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((40, 50, 3), 90, np.uint8))
    missing = tmp_path / "missing.jpg"
    code = load_tool("demo").main(
        [
            str(missing),
            str(image),
            "--checkpoint",
            str(tmp_path / "run" / "checkpoints" / "final.pth"),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"skipped: cannot read {missing}: the file does not exist" in err
    assert (tmp_path / "out" / "a.png").is_file()


def test_coco_float_image_ids_are_read_and_unknown_ones_named(tmp_path):
    from test_coco_data import coco_json, write_coco

    data = coco_json(
        [
            {
                "id": 41,
                "image_id": 99,
                "category_id": 1,
                "bbox": [1, 1, 5, 5],
                "segmentation": [[1.0] * 400],
            }
        ]
    )
    for image in data["images"]:
        image["id"] = float(image["id"])  # as pandas writes them: 7.0
    for annotation in data["annotations"][:-1]:
        annotation["image_id"] = float(annotation["image_id"])
    write_coco(tmp_path, data)
    dataset = COCODataset(
        tmp_path / "annotations" / "instances_val2017.json", tmp_path / "val2017"
    )
    assert sorted(a.image_id for a in dataset.annotations) == ["12", "3", "7"]
    assert len(dataset.annotation([a.image_id for a in dataset.annotations].index("7"))) == 3
    [unknown] = [p for p in dataset.problems if "99" in p.message]
    assert "annotation 41 refers to image id 99" in unknown.message
    assert "1.0, 1.0" not in unknown.message  # not the polygon


def test_a_coco_test_json_without_annotations_is_refused_before_inference(tmp_path):
    from test_coco_data import coco_json, write_coco

    data = coco_json()
    del data["annotations"]
    write_coco(tmp_path, data)
    config = DataConfig(
        format="coco", root=str(tmp_path), train=("val2017",), test=("val2017",), class_names=None
    )
    with pytest.raises(DataError, match="has no 'annotations' list"):
        build_test_set(config)


def test_a_mistyped_shapes_root_is_an_error_not_a_generated_data_set(tmp_path):
    config = tiny_config(
        tmp_path, data={"root": str(tmp_path / "shapez"), "shapes_generate": False}
    )
    with pytest.raises(DataError, match=r"shapez .* does not exist.*data.shapes_generate=true"):
        build_dataset(config.data, "train")
    assert not (tmp_path / "shapez").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("point_at", ["kangaroo", "kangaroo/VOCdevkit"])
def test_a_root_above_the_voc_folder_is_told_which_root_would_work(tmp_path, point_at):
    year = tmp_path / "kangaroo" / "VOCdevkit" / "VOC2007"
    make_voc(year, {"a": GOOD}, "test")
    with pytest.raises(DataError) as caught:
        VOCDataset(tmp_path / point_at, ["test"], ["cat"])
    message = str(caught.value)
    assert "ImageSets/Main/test.txt does not exist" in message
    assert f"data.root={year} with split test" in message
    relative = year.relative_to(tmp_path / point_at).as_posix()
    assert f"split {relative}/test" in message
    # the same when the class list is left to the annotations (the own-data configs)
    with pytest.raises(DataError, match=f"data.root={year} with split test"):
        voc_class_names(tmp_path / point_at, ["test"])


def test_a_legacy_checkpoint_with_objects_is_refused_for_the_real_reason(tmp_path):
    import collections

    from dsod.engine.checkpoint import CheckpointError, load_checkpoint

    good = tmp_path / "legacy_ok.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, good, _use_new_zipfile_serialization=False)
    assert load_checkpoint(good)["model"]["w"].shape == (2,)
    bad = tmp_path / "legacy_objects.pth"
    torch.save(
        {"model": {}, "x": collections.UserDict()}, bad, _use_new_zipfile_serialization=False
    )
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        load_checkpoint(bad)


def test_checkpoints_follow_the_umask_like_every_other_output(tmp_path):
    import os

    from dsod.engine.checkpoint import save_atomic

    previous = os.umask(0o022)
    try:
        save_atomic({"model": {}}, tmp_path / "a.pth")
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.pth").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


def test_each_run_says_first_where_it_writes(tmp_path, caplog, capsys):
    import logging

    config = _shapes(tmp_path, solver={"max_iter": 1})
    with caplog.at_level(logging.INFO):
        train(config, tmp_path / "run", progress=False)
    assert caplog.records[0].getMessage() == f"writing to {(tmp_path / 'run').absolute()}"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_eval(
            config,
            tmp_path / "run" / "checkpoints" / "final.pth",
            out_dir=tmp_path / "eval",
            progress=False,
        )
    assert caplog.records[0].getMessage() == f"writing to {(tmp_path / 'eval').absolute()}"
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((40, 50, 3), 90, np.uint8))
    capsys.readouterr()
    load_tool("demo").main(
        [
            str(image),
            "--checkpoint",
            str(tmp_path / "run" / "checkpoints" / "final.pth"),
            "--out",
            str(tmp_path / "demo"),
            "--device",
            "cpu",
        ]
    )
    assert (
        capsys.readouterr().out.splitlines()[0] == f"writing to {(tmp_path / 'demo').absolute()}"
    )


def test_repeated_coco_annotation_ids_are_warned_about_and_scored_right(tmp_path, caplog):
    import logging

    from test_coco_data import coco_json, write_coco

    from dsod.evaluation.scores import score_detections

    data = coco_json()
    data["annotations"] = [  # ids 5 and 9 used twice, by boxes of other images
        {"id": 5, "image_id": 7, "category_id": 1, "bbox": [10, 10, 30, 30], "iscrowd": 0},
        {"id": 5, "image_id": 3, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0},
        {"id": 9, "image_id": 7, "category_id": 5, "bbox": [50, 40, 40, 30], "iscrowd": 0},
        {"id": 9, "image_id": 12, "category_id": 90, "bbox": [1, 2, 30, 20], "iscrowd": 0},
        {"id": 2, "image_id": 12, "category_id": 5, "bbox": [3, 3, 10, 10], "iscrowd": 0},
    ]
    path = write_coco(tmp_path, data)
    dataset = COCODataset(path, tmp_path / "val2017")
    [problem] = [p for p in dataset.problems if p.kind == "duplicate"]
    assert problem.file == str(path) and problem.severity == "warning"
    assert (
        "2 annotation id(s) are each used by more than one box (4 boxes), e.g. 5, 9"
        in problem.message
    )
    assert sum(len(a) for a in dataset.annotations) == 5  # every box is kept
    perfect = {
        a.image_id: Detections(a.boxes.astype(np.float64), np.ones(len(a)), a.labels)
        for a in dataset.annotations
    }
    with caplog.at_level(logging.WARNING):
        scores = score_detections(dataset, perfect)
    assert scores.coco["AP"] == pytest.approx(1.0)
    assert any(
        "2 annotation id(s) are each used by more than one box (4 boxes), e.g. 5, 9"
        in r.getMessage()
        and str(path) in r.getMessage()
        for r in caplog.records
    )
    assert json.loads(path.read_text())["annotations"][1]["id"] == 5  # the file is untouched


def test_eval_reports_the_test_splits_annotation_problems(tmp_path, caplog):
    import logging

    root = tmp_path / "voc"
    unknown = GOOD.replace("<name>cat</name>", "<name>wombat</name>")
    clipped = GOOD.replace("<xmax>50</xmax>", "<xmax>140</xmax>")
    make_voc(root, {"a": GOOD, "b": unknown, "c": clipped}, "test")
    make_voc(root, {"a": GOOD}, "trainval")
    results = tmp_path / "results"
    results.mkdir()
    (results / "comp4_det_test_cat.txt").write_text("a 0.9 1 1 50 40\n")
    config = load_config(write_config(tmp_path, root))
    with caplog.at_level(logging.WARNING):
        figures = run_eval(
            config,
            voc_results=results,
            out_dir=tmp_path / "eval",
            json_path=tmp_path / "eval" / "figures.json",
        )
    logged = [r.getMessage() for r in caplog.records]
    assert "test data: 1 warning box_clipped, 1 warning unknown_class" in logged
    assert any(
        "b.xml" in line and "class 'wombat' is not in data.class_names" in line for line in logged
    )
    saved = json.loads((tmp_path / "eval" / "figures.json").read_text())
    assert saved["data_problems"] == figures["data_problems"]
    assert [(p["kind"], Path(p["file"]).name) for p in saved["data_problems"]] == [
        ("unknown_class", "b.xml"),
        ("box_clipped", "c.xml"),
    ]


def test_a_latin1_xml_without_a_declaration_is_named_as_such(tmp_path):
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD, "b": GOOD}, "trainval")
    (root / "Annotations" / "b.xml").write_bytes(
        GOOD.replace("cat", "k\xe4tzchen").encode("latin-1")
    )
    dataset = VOCDataset(root, ["trainval"], ["cat", "kätzchen"])
    [problem] = dataset.problems
    assert problem.file.endswith("b.xml") and problem.kind == "malformed_annotation"
    assert "not well-formed" in problem.message
    assert (
        "the file is not UTF-8 (byte 0xe4 at offset 77) and declares no encoding"
        in problem.message
        and 'encoding="ISO-8859-1"' in problem.message
    )
    declared = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + GOOD.replace(
        "cat", "k\xe4tzchen"
    ).encode("latin-1")
    (root / "Annotations" / "b.xml").write_bytes(declared)  # declared, it reads
    dataset = VOCDataset(root, ["trainval"], ["cat", "kätzchen"])
    assert dataset.problems == [] and dataset.annotation(1).labels.tolist() == [2]


def test_ids_with_an_image_suffix_and_upper_case_xml_files_are_named_as_such(tmp_path):
    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD, "b": GOOD}, "trainval")
    (root / "Annotations" / "b.xml").rename(root / "Annotations" / "b.XML")
    split = root / "ImageSets" / "Main" / "trainval.txt"
    split.write_text("a.jpg\nb\n")
    dataset_problems = VOCDataset(root, ["trainval"], ["cat"]).problems
    messages = [p.message for p in dataset_problems]
    assert messages[0].startswith(
        "the file does not exist; the split file lists the id "
        "'a.jpg' with an image suffix: ids are listed without one "
        "('a', whose a.xml exists)"
    )
    assert messages[1].startswith(
        "the file does not exist; b.XML exists: annotation files must end in .xml, in lower case"
    )
    with pytest.raises(
        DataError,
        match=r"name no object class \(2 of the 2 annotation files "
        r"listed cannot be read; first: .*a.jpg.xml: the file "
        r"does not exist; the split file lists the id 'a.jpg'",
    ):
        voc_class_names(root, ["trainval"])


def _disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_at_the_first_checkpoint_does_not_claim_a_previous_file(tmp_path, monkeypatch):
    from dsod.engine.checkpoint import CheckpointError, save_atomic

    monkeypatch.setattr(torch, "save", _disk_full)
    with pytest.raises(CheckpointError) as caught:
        save_atomic({"model": {}}, tmp_path / "first.pth")
    assert "No space left on device" in str(caught.value)
    assert "no file was written" in str(caught.value) and "intact" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "second.pth").write_bytes(b"old")
    with pytest.raises(CheckpointError, match="the previous file is intact"):
        save_atomic({"model": {}}, tmp_path / "second.pth")
    assert (tmp_path / "second.pth").read_bytes() == b"old"


def test_eval_json_on_a_full_disk_leaves_no_cut_off_file(tmp_path, monkeypatch):
    import os

    root = tmp_path / "voc"
    make_voc(root, {"a": GOOD}, "test")
    make_voc(root, {"a": GOOD}, "trainval")
    results = tmp_path / "results"
    results.mkdir()
    (results / "comp4_det_test_cat.txt").write_text("a 0.9 1 1 50 40\n")
    config = load_config(write_config(tmp_path, root))
    figures = tmp_path / "eval" / "figures.json"
    figures.parent.mkdir()
    figures.write_text('{"old": true}')

    def cut_off(path, *args, **kwargs):  # a write that fails after creating the file
        path.open("w").close()
        _disk_full()

    monkeypatch.setattr(Path, "write_text", cut_off)
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(
        DataError,
        match=r"could not write the figures: No space left on "
        r"device .*the figures above are complete",
    ):
        run_eval(config, voc_results=results, out_dir=tmp_path / "eval", json_path=figures)
    assert figures.read_text() == '{"old": true}'
    assert sorted(p.name for p in figures.parent.iterdir()) == ["figures.json", "pr_curves.png"]


def test_a_checkpoint_with_non_finite_weights_is_warned_about_when_loaded(tmp_path, caplog):
    import logging

    from dsod.config import config_to_dict
    from dsod.engine.builders import build_model
    from dsod.engine.checkpoint import save_atomic
    from dsod.inference import Detector

    config = tiny_config(tmp_path)
    weights = build_model(config).state_dict()
    names = [n for n, v in weights.items() if v.is_floating_point()][:2]
    for name in names:
        weights[name].view(-1)[0] = float("nan")
    path = tmp_path / "nan.pth"
    save_atomic({"model": weights, "config": config_to_dict(config)}, path)
    with caplog.at_level(logging.WARNING):
        Detector.from_checkpoint(path)
    [warning] = [r.getMessage() for r in caplog.records if "NaN" in r.getMessage()]
    assert f"checkpoint {path} holds NaN or infinite values in 2 of its" in warning
    assert names[0] in warning and names[1] in warning and "meaningless" in warning


def test_a_checkpoint_without_a_config_names_the_tools_option(tmp_path, capsys):
    from dsod.engine.builders import build_model
    from dsod.engine.checkpoint import save_atomic

    path = tmp_path / "bare.pth"
    save_atomic({"model": build_model(tiny_config(tmp_path)).state_dict()}, path)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((40, 50, 3), 90, np.uint8))
    assert (
        load_tool("demo").main(
            [
                str(image),
                "--checkpoint",
                str(path),
                "--out",
                str(tmp_path / "out"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"checkpoint {path} holds no config: give the config it was trained with "
        f"(--config CONFIG in the tools" in err
    )
