"""What a config leaves to the data: the class list read from the annotations, priors
fitted to the training boxes, both saved with the run and taken back from its checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config
from test_voc_data import obj, write_voc, xml

from dsod.apps.eval_tool import run_eval
from dsod.config import ConfigError, config_from_dict, config_to_dict, load_config
from dsod.data.voc import voc_class_names
from dsod.engine.checkpoint import load_checkpoint
from dsod.engine.from_data import with_class_names
from dsod.engine.trainer import train
from dsod.inference import Detector

# far too small for the shapes (8-40 px on the 64 px input): a fit must move them
POOR_PRIORS = {"min_sizes": [2, 3, 4, 5, 6, 7], "max_sizes": [3, 4, 5, 6, 7, 8]}


def _voc(root: Path) -> None:
    write_voc(
        root,
        {
            "a": xml([obj("zebra", (1, 1, 20, 20)), obj("ant", (30, 30, 60, 60))]),
            "b": xml([obj("Moose", (5, 5, 50, 50)), obj(" ant ", (2, 2, 9, 9))]),
            "c": xml([]),
        },
    )


def test_class_names_are_read_from_the_xml_files_sorted(tmp_path):
    _voc(tmp_path)
    assert voc_class_names(tmp_path, ["trainval"]) == ("Moose", "ant", "zebra")
    config = config_from_dict(
        {"data": {"root": str(tmp_path), "train": ["trainval"], "class_names": None}}
    )
    resolved = with_class_names(config)
    assert resolved.data.class_names == ("Moose", "ant", "zebra")
    assert resolved.num_classes == 4


def test_a_num_classes_that_disagrees_with_the_data_is_one_error_naming_both(tmp_path):
    _voc(tmp_path)
    config = config_from_dict(
        {
            "data": {"root": str(tmp_path), "train": ["trainval"], "class_names": None},
            "model": {"num_classes": 6},
        }
    )
    with pytest.raises(ConfigError, match=r"num_classes is 6.*3 \(\['Moose', 'ant', 'zebra'\]\)"):
        with_class_names(config)


def test_fitted_priors_and_the_class_list_travel_with_the_run(tmp_path):
    config = tiny_config(tmp_path, data={"class_names": None}, priors={"fit": True, **POOR_PRIORS})
    out = tmp_path / "run"
    train(config, out, progress=False)
    saved = load_config(out / "config.yaml")
    assert saved.priors.fit is False
    assert saved.data.class_names == ("circle", "square", "triangle")
    assert saved.priors.min_sizes != tuple(float(v) for v in config.priors.min_sizes)
    state = load_checkpoint(out / "checkpoints" / "final.pth")
    assert state["config"]["priors"] == config_to_dict(saved)["priors"]

    # The config that says fit: true and class_names: null evaluates the checkpoint as is,
    # with the priors and classes the run resolved; the run's own config.yaml agrees.
    checkpoint = out / "checkpoints" / "final.pth"
    as_given = run_eval(config, checkpoint, out_dir=tmp_path / "eval1", progress=False)
    from_run = run_eval(saved, checkpoint, out_dir=tmp_path / "eval2", progress=False)
    assert as_given["voc"] == from_run["voc"]
    detector = Detector.from_checkpoint(checkpoint, config)
    assert detector.class_names == ["circle", "square", "triangle"]
    assert detector.postprocessor.priors.shape[0] > 0

    # Other priors than the fitted ones, given explicitly, are refused.
    other = dataclasses.replace(
        saved, priors=dataclasses.replace(saved.priors, min_sizes=(7,) * 6)
    )
    with pytest.raises(Exception, match="priors.min_sizes"):
        Detector.from_checkpoint(checkpoint, other)


def test_fit_priors_tool_prints_both_coverages_and_writes_a_config(tmp_path, capsys):
    from conftest import load_tool

    config = tiny_config(tmp_path, priors=POOR_PRIORS)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    written = tmp_path / "fitted.yaml"
    assert load_tool("fit_priors").main([str(path), "--write", str(written)]) == 0
    text = capsys.readouterr().out
    assert text.count("prior coverage") == 2 and "min_sizes:" in text
    fitted = load_config(written)
    assert fitted.priors.fit is False and fitted.priors.min_sizes != config.priors.min_sizes


def test_fit_priors_refuses_to_write_onto_the_config_it_reads(tmp_path, capsys):
    from conftest import load_tool

    path = tmp_path / "tiny.yaml"
    text = "# my notes\n" + yaml.safe_dump(config_to_dict(tiny_config(tmp_path)))
    path.write_text(text)
    tool = load_tool("fit_priors").main
    for target in (str(path), str(tmp_path / "." / "tiny.yaml")):
        assert tool([str(path), "--write", target]) == 2
        assert (
            "is the config this reads; its comments and layout would be lost"
            in capsys.readouterr().err
        )
    assert path.read_text() == text


def test_coco_without_a_class_list_takes_num_classes_from_the_training_json(tmp_path):
    from test_coco_data import coco_json, write_coco

    write_coco(tmp_path, coco_json(), "train")
    config = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "own_coco.yaml",
        [f"data.root={tmp_path}", "data.train=[train]", "data.test=[train]"],
    )
    resolved = with_class_names(config)
    assert resolved.model.num_classes == 4 and resolved.data.class_names is None
    with pytest.raises(ConfigError, match="model.num_classes is needed"):
        config.num_classes  # noqa: B018 - unresolved, the config alone cannot say


def test_training_logs_the_coverage_and_warns_with_the_fix_when_it_is_low(tmp_path, caplog):
    import logging

    import torch

    from dsod.engine.trainer import Trainer

    config = tiny_config(tmp_path, priors=POOR_PRIORS)
    with caplog.at_level(logging.INFO):
        Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    assert "prior coverage" in caplog.text and "size 16-32 px" in caplog.text
    [warning] = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "low prior coverage" in r.getMessage()
    ]
    assert "priors.fit=true" in warning and "tools/fit_priors.py" in warning
    caplog.clear()
    with caplog.at_level(logging.INFO):
        Trainer(
            tiny_config(tmp_path, priors={"fit": True, **POOR_PRIORS}),
            tmp_path / "out2",
            torch.device("cpu"),
            progress=False,
        )
    assert "priors fitted to" in caplog.text and "low prior coverage" not in caplog.text


def test_check_dataset_prints_the_coverage_of_the_priors_training_would_use(tmp_path, capsys):
    from conftest import load_tool

    config = tiny_config(tmp_path, priors={"fit": True, **POOR_PRIORS})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert load_tool("check_dataset").main([str(path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "priors fitted to" in out and "prior coverage" in out
    assert load_tool("check_dataset").main([str(path), "priors.fit=false", "--workers", "1"]) == 0
    assert "warning: low prior coverage" in capsys.readouterr().out


def test_run_length_from_the_number_of_training_images():
    from dsod.engine.from_data import run_length

    # 25 passes, within 4,000-8,000 images, whole iterations rounded up
    assert run_length(160, 16) == 250  # 4,000 images
    assert run_length(100, 16) == 250  # 2,500 -> at least 4,000
    assert run_length(292, 16) == 457  # 7,300 -> 456.25 iterations
    assert run_length(1200, 16) == 500  # 30,000 -> at most 8,000
    assert run_length(1200, 32) == 250


@pytest.mark.parametrize(
    "images, says",
    [
        (160, "(4,000 images, within 4,000-8,000): 250 iterations"),
        (292, "(7,300 images, within 4,000-8,000): 457 iterations"),
        (1200, "(30,000 images, cut to 8,000): 500 iterations"),
    ],
)
def test_the_run_length_line_says_whether_the_bounds_moved_it(images, says, caplog):
    from dsod.engine.from_data import with_run_length

    config = config_from_dict({"solver": {"max_iter": None, "batch_size": 16}})
    with caplog.at_level("INFO"):
        resolved = with_run_length(config, images)
    assert f"25 passes over {images} training images {says}" in caplog.text
    assert f": {resolved.solver.max_iter} iterations" in caplog.text


def test_a_run_with_max_iter_null_takes_its_length_from_the_data(tmp_path, caplog):
    import torch

    from dsod.engine.trainer import Trainer

    config = tiny_config(
        tmp_path, solver={"max_iter": None, "batch_size": 16, "base_batch": 16, "steps": [0.5]}
    )
    with pytest.raises(ConfigError, match="solver.max_iter is null"):
        config.solver.schedule()
    with caplog.at_level("INFO"):
        trainer = Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    # 16 training images: 25 passes are 400 images, raised to 4,000: 250 iterations of 16
    assert trainer.config.solver.max_iter == 250
    assert trainer.config.solver.schedule() == (1, (125,))
    assert "25 passes over 16 training images (400 images, raised to 4,000): 250" in caplog.text
    assert "250 iterations of 16 images: 4,000 images, 250.0 passes" in caplog.text


def test_zoom_out_fitted_to_the_smallest_class(tmp_path):
    from dsod.data.datasets import build_dataset
    from dsod.engine.from_data import fit_zoom_out

    # 100x100 images at a 300 input: a 50 px box is 150 px, a 30 px box 90 px, 12 px 36 px
    items = {
        f"a{i}": xml([obj("big", (1, 1, 50, 50)), obj("small", (51, 51, 80, 80))], size=(100, 100))
        for i in range(4)
    }
    write_voc(tmp_path / "voc", items, image_size=(100, 100))
    config = config_from_dict(
        {
            "data": {
                "format": "voc",
                "root": str(tmp_path / "voc"),
                "train": ["trainval"],
                "class_names": ["big", "small"],
            },
            "priors": {"min_sizes": [30, 60, 111, 162, 213, 264]},
            "augment": {"expand_max_ratio": None, "expand_prob": 0.5},
        }
    )
    dataset = build_dataset(config.data, "train")
    fitted, line = fit_zoom_out(config, dataset)
    # the small class decides: 90 px over the 30 px smallest prior
    assert fitted.augment.expand_max_ratio == 3.0 and fitted.augment.expand_prob == 0.5
    assert "3.00x" in line and "30 px" in line and "90 px" in line
    # with a 50 px smallest prior the small boxes can shrink only 1.8x; a 70 px one, 1.29x:
    # no zoom-out at all
    wide = dataclasses.replace(
        config, priors=dataclasses.replace(config.priors, min_sizes=(70, 80, 111, 162, 213, 264))
    )
    fitted, line = fit_zoom_out(wide, dataset)
    assert fitted.augment.expand_prob == 0.0 and fitted.augment.expand_max_ratio == 1.0
    assert "no zoom-out" in line
    # a ratio given in the config is kept as it is
    given = dataclasses.replace(
        config, augment=dataclasses.replace(config.augment, expand_max_ratio=2.0)
    )
    assert fit_zoom_out(given, dataset) == (given, "")
