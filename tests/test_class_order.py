"""Labels are positions in the class list: a data set or checkpoint whose classes come in
another order, or in another number, is refused before anything runs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import TINY_MODEL, TINY_PRIORS
from test_coco_data import coco_json, write_coco

from dsod.config import config_from_dict, config_to_dict
from dsod.data.coco import COCODataset
from dsod.data.datasets import check_classes
from dsod.data.errors import DataError
from dsod.engine.trainer import Trainer


def reversed_ids(data: dict) -> dict:
    """The same names with the category ids in the opposite order (1 <-> 90 ...)."""
    data = copy.deepcopy(data)
    ids = sorted(c["id"] for c in data["categories"])
    swap = dict(zip(ids, reversed(ids)))
    for category in data["categories"]:
        category["id"] = swap[category["id"]]
    for annotation in data["annotations"]:
        annotation["category_id"] = swap.get(annotation["category_id"], annotation["category_id"])
    return data


def test_check_classes_by_hand(tmp_path):
    data = COCODataset(write_coco(tmp_path, coco_json()), tmp_path / "val2017")
    assert data.class_names == ("person", "airplane", "toothbrush")
    check_classes(data, 3, ["person", "airplane", "toothbrush"])  # 3 object classes
    with pytest.raises(
        DataError,
        match=r"has 3 classes but the model has 80 "
        r"\(model.num_classes = 81 .*num_classes to 4",
    ):
        check_classes(data, 80)
    with pytest.raises(DataError, match=r"label 1 is 'person' there but 'toothbrush'"):
        check_classes(data, 3, ["toothbrush", "airplane", "person"])


def coco_config(tmp_path, **model):
    return config_from_dict(
        {
            "name": "coco_tiny",
            "model": {**TINY_MODEL, "num_classes": 4, **model},
            "priors": dict(TINY_PRIORS),
            "data": {
                "format": "coco",
                "root": str(tmp_path),
                "train": ["train2017"],
                "test": ["val2017"],
                "workers": 0,
                "class_names": None,
            },
            "solver": {
                "lr": 0.01,
                "base_batch": 2,
                "batch_size": 2,
                "max_iter": 2,
                "warmup_iters": 1,
                "steps": [100],
            },
            "test": {"batch_size": 2},
        }
    )


def test_training_refuses_a_test_json_with_other_category_order_before_training(tmp_path):
    write_coco(tmp_path, coco_json(), "train2017")
    write_coco(tmp_path, reversed_ids(coco_json()), "val2017")
    trainer = Trainer(coco_config(tmp_path), tmp_path / "out", torch.device("cpu"), progress=False)
    with pytest.raises(DataError, match=r"test split \['val2017'\] orders its classes"):
        trainer.run()
    assert trainer.step == 0


def test_training_refuses_a_class_count_the_model_does_not_have(tmp_path):
    write_coco(tmp_path, coco_json(), "train2017")
    with pytest.raises(
        DataError,
        match=r"training split \['train2017'\] under .* has 3 "
        r"classes but the config has 80",
    ):
        Trainer(
            coco_config(tmp_path, num_classes=81),
            tmp_path / "out",
            torch.device("cpu"),
            progress=False,
        )


def test_eval_refuses_a_checkpoint_trained_with_another_class_order(tmp_path, capsys):
    from conftest import load_tool

    from dsod.engine.builders import build_model
    from dsod.engine.checkpoint import save_atomic

    write_coco(tmp_path, reversed_ids(coco_json()), "val2017")
    config = coco_config(tmp_path)
    (tmp_path / "c.yaml").write_text(json.dumps(config_to_dict(config)))  # JSON is YAML
    save_atomic(
        {
            "model": build_model(config).state_dict(),
            "config": config_to_dict(config),
            "class_names": ["person", "airplane", "toothbrush"],
        },
        tmp_path / "m.pth",
    )
    code = load_tool("eval").main(
        [
            str(tmp_path / "c.yaml"),
            "--checkpoint",
            str(tmp_path / "m.pth"),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "orders its classes differently from checkpoint" in err and "m.pth" in err


def test_a_test_split_with_repeated_image_ids_is_refused_before_training(tmp_path):
    # Two COCO JSONs that number their images alike: detections are kept per image id.
    write_coco(tmp_path, coco_json(), "train2017")
    write_coco(tmp_path, coco_json(), "val2017")
    raw = config_to_dict(coco_config(tmp_path))
    raw["data"]["test"] = ["val2017", "train2017"]
    trainer = Trainer(config_from_dict(raw), tmp_path / "out", torch.device("cpu"), progress=False)
    with pytest.raises(DataError, match=r"image id '7' names both .*val2017.*train2017"):
        trainer.run()
    assert trainer.step == 0


def test_detector_refuses_a_checkpoint_naming_another_number_of_classes(tmp_path):
    from dsod.engine.builders import build_model
    from dsod.engine.checkpoint import CheckpointError, save_atomic
    from dsod.inference import Detector

    config = coco_config(tmp_path)  # 3 classes
    save_atomic(
        {
            "model": build_model(config).state_dict(),
            "config": config_to_dict(config),
            "class_names": ["person", "airplane"],
        },
        tmp_path / "m.pth",
    )
    with pytest.raises(CheckpointError, match=r"m.pth names 2 classes .* for a model with 3"):
        Detector.from_checkpoint(tmp_path / "m.pth")
