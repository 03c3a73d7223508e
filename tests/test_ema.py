"""The moving average of the weights: its decay, its updates worked by hand, and where
training saves it and evaluation reads it."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import tiny_config
from torch import nn

from dsod.engine.ema import WeightAverage, ema_decay
from dsod.engine.trained_model import load_trained_model
from dsod.engine.trainer import Trainer


def test_decay_from_the_fraction_of_the_run():
    assert ema_decay(0.1, 250) == 1 - 1 / 25
    assert ema_decay(0.1, 5) == 0.0  # a time constant under one step copies the weights


def test_updates_worked_by_hand():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    average = WeightAverage(model, decay=0.5)
    weight = model[0].weight
    values = []
    for value in (1.0, 3.0, 5.0):
        with torch.no_grad():
            weight.fill_(value)
        model[1].num_batches_tracked += 1
        average.update(model)
        values.append(average.model[0].weight.item())
    # update 1 copies (1); update 2 (n=1): decay min(0.5, 2/11) -> 1 + (1 - 2/11) * (3 - 1);
    # update 3 (n=2): decay min(0.5, 3/12) = 0.25 -> previous + 0.75 * (5 - previous)
    second = 1 + (1 - 2 / 11) * 2
    assert values == pytest.approx([1.0, second, second + 0.75 * (5 - second)], rel=1e-6)
    assert average.updates == 3
    assert average.model[1].num_batches_tracked.item() == 3  # integer buffers are copied
    assert weight.item() == 5.0  # the trained model is not touched


def test_training_saves_the_average_and_evaluation_reads_it(tmp_path):
    config = tiny_config(tmp_path, solver={"max_iter": 4, "ema": 0.5})
    trainer = Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    trainer.run()
    saved = torch.load(tmp_path / "out" / "checkpoints" / "final.pth", weights_only=True)
    assert saved["ema"]["updates"] == 4
    averaged = saved["ema"]["weights"]
    trained = saved["model"]
    differs = [
        k
        for k in trained
        if trained[k].is_floating_point() and not torch.equal(trained[k], averaged[k])
    ]
    assert differs  # the average is not the last weights
    loaded = load_trained_model(tmp_path / "out" / "checkpoints" / "final.pth").model
    assert all(torch.equal(loaded.state_dict()[k], averaged[k]) for k in averaged)


def test_resume_continues_the_average_bit_for_bit(tmp_path):
    config = tiny_config(
        tmp_path, solver={"max_iter": 4, "ema": 0.5}, train={"keep_checkpoints": 4}
    )
    Trainer(config, tmp_path / "a", torch.device("cpu"), progress=False).run()
    # A run stopped after step 2: its checkpoint of that step, resumed to the end.
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(
        tmp_path / "a" / "checkpoints" / "checkpoint_00000002.pth", tmp_path / "b" / "checkpoints"
    )
    Trainer(config, tmp_path / "b", torch.device("cpu"), resume=True, progress=False).run()
    a, b = (
        torch.load(tmp_path / d / "checkpoints" / "final.pth", weights_only=True)
        for d in ("a", "b")
    )
    assert a["ema"]["updates"] == b["ema"]["updates"] == 4
    assert all(
        torch.equal(a["ema"]["weights"][k], b["ema"]["weights"][k]) for k in a["ema"]["weights"]
    )
