"""A resume takes the settings it may change and refuses the others, so that the run's
records always hold what ran."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import load_tool, tiny_config

from dsod.config import config_to_dict, load_config
from dsod.engine.checkpoint import CheckpointError, load_checkpoint
from dsod.engine.resume_check import check_resume_settings
from dsod.engine.trainer import Trainer


def _first_run(tmp_path, **solver):
    config = tiny_config(tmp_path, solver={"max_iter": 2, **solver})
    Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False).run()
    return config


def test_a_changed_learning_rate_is_refused_naming_both_values(tmp_path):
    _first_run(tmp_path)
    before = (tmp_path / "out" / "config.yaml").read_text()
    other = tiny_config(tmp_path, solver={"max_iter": 3, "lr": 0.5}, augment={"flip_prob": 0.0})
    with pytest.raises(CheckpointError) as caught:
        Trainer(other, tmp_path / "out", torch.device("cpu"), progress=False, resume=True)
    message = str(caught.value)
    assert "checkpoint_00000002.pth: the run was trained with other settings" in message
    assert "solver.lr: the run has 0.05, this config gives 0.5" in message
    assert "augment.flip_prob: the run has 0.5, this config gives 0.0" in message
    assert "solver.max_iter" not in message.split("\nResume")[0]
    assert "drop these overrides, or restore" in message and "another --out" in message
    # Nothing was written: the records still say what ran.
    assert (tmp_path / "out" / "config.yaml").read_text() == before


def test_an_edited_config_yaml_is_refused_by_the_tool(tmp_path, capsys):
    _first_run(tmp_path)
    path = tmp_path / "out" / "config.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["solver"]["lr"] = 0.5
    path.write_text(yaml.safe_dump(raw))
    code = load_tool("train").main(
        [str(path), "--out", str(tmp_path / "out"), "--resume", "--no-progress"]
    )
    assert code == 2
    assert "solver.lr: the run has 0.05, this config gives 0.5" in capsys.readouterr().err


def test_what_a_resume_may_change_takes_effect_and_is_recorded(tmp_path):
    _first_run(tmp_path)
    more = tiny_config(
        tmp_path,
        solver={"max_iter": 3},
        train={"log_every": 2, "checkpoint_every": 3, "keep_checkpoints": 5},
        data={"workers": 1},
    )
    Trainer(more, tmp_path / "out", torch.device("cpu"), progress=False, resume=True).run()
    final = load_checkpoint(tmp_path / "out" / "checkpoints" / "final.pth")
    assert final["step"] == 3
    assert final["config"]["solver"]["max_iter"] == 3
    assert final["config"]["train"]["checkpoint_every"] == 3
    recorded = load_config(tmp_path / "out" / "config.yaml")
    assert recorded.solver.max_iter == 3 and recorded.data.workers == 1


def test_a_longer_run_keeps_the_schedule_it_has_passed(tmp_path):
    run = tiny_config(tmp_path, solver={"max_iter": 4, "warmup_iters": 0.25, "steps": [0.5]})
    recorded = config_to_dict(run)  # warm-up 1 iteration, lr step at 2
    longer = tiny_config(
        tmp_path, solver={"max_iter": 8, "warmup_iters": 0.25, "steps": [0.5]}
    )  # warm-up 2, step at 4
    with pytest.raises(CheckpointError) as caught:
        check_resume_settings(recorded, longer, 3, "c.pth", tmp_path)
    message = str(caught.value)
    assert "the run warmed up over 1 iterations; this config gives 2" in message
    assert "give solver.warmup_iters=1" in message
    assert (
        "up to step 3 the run dropped the learning rate at [2]; this config gives none" in message
    )
    # Before any step the whole schedule may move; pinned as iterations, the part run
    # stays and a step still ahead takes effect.
    check_resume_settings(recorded, longer, 0, "c.pth", tmp_path)
    pinned = tiny_config(tmp_path, solver={"max_iter": 8, "warmup_iters": 1, "steps": [2, 0.75]})
    check_resume_settings(recorded, pinned, 3, "c.pth", tmp_path)
    # Given in iterations, a longer run keeps its schedule as it is.
    plain = config_to_dict(tiny_config(tmp_path, solver={"max_iter": 4}))
    check_resume_settings(plain, tiny_config(tmp_path, solver={"max_iter": 40}), 4, "c", tmp_path)


def test_keys_an_older_checkpoint_does_not_record_are_not_compared(tmp_path):
    config = tiny_config(tmp_path)
    recorded = config_to_dict(config)
    del recorded["solver"]["lr"]
    other = tiny_config(tmp_path, solver={"lr": 0.5})
    check_resume_settings(recorded, other, 2, "c.pth", tmp_path)
    check_resume_settings(None, other, 2, "c.pth", tmp_path)
