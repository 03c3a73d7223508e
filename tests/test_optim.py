import dataclasses
import logging

import pytest
import torch
from conftest import TINY_MODEL, tiny_config

from dsod.config import ConfigError, SolverConfig, config_from_dict
from dsod.engine.builders import build_model
from dsod.engine.optim import (
    average_gradients,
    build_optimizer,
    build_scheduler,
    lr_factor,
    parameter_groups,
    scaled_lr,
    schedule_warnings,
    smaller_steps,
)
from dsod.engine.trainer import Trainer, train

TINY = {"model": dict(TINY_MODEL), "priors": {"steps": None}}


def test_warmup_then_steps():
    kw = dict(steps=[100, 200], gamma=0.1, warmup_iters=10, warmup_factor=0.1)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(5, **kw) == pytest.approx(0.1 * 0.5 + 0.5)  # halfway: 0.55
    assert lr_factor(10, **kw) == 1.0
    assert lr_factor(99, **kw) == 1.0
    assert lr_factor(100, **kw) == pytest.approx(0.1)
    assert lr_factor(250, **kw) == pytest.approx(0.01)


def test_lr_scales_with_the_batch():
    assert scaled_lr(SolverConfig(lr=0.1, base_batch=128, batch_size=32)) == pytest.approx(0.025)


def test_head_batchnorm_is_never_decayed_backbone_batchnorm_is_by_default():
    model = build_model(config_from_dict(TINY))
    decay, no_decay = parameter_groups(model, 5e-4, decay_backbone_bn=True)
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.heads.heads[0].loc_bn.weight) in no_decay_ids
    assert id(model.backbone.stem.conv1.norm.weight) not in no_decay_ids
    assert id(model.heads.heads[0].norm.weight) not in no_decay_ids  # L2Norm scale decays
    _, no_decay = parameter_groups(model, 5e-4, decay_backbone_bn=False)
    assert id(model.backbone.stem.conv1.norm.weight) in {id(p) for p in no_decay["params"]}
    total = sum(p.numel() for g in parameter_groups(model, 5e-4, True) for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_heads_l2norm_scales_get_their_own_fixed_rate_without_decay():
    model = build_model(config_from_dict(TINY))
    solver = SolverConfig(lr=0.1, base_batch=128, batch_size=64, l2norm_lr=12.5)
    opt = build_optimizer(model, solver)
    scales = opt.param_groups[2]
    head_scales = {id(head.norm.weight) for head in model.heads.heads}
    assert {id(p) for p in scales["params"]} == head_scales
    assert scales["lr"] == 12.5 and scales["weight_decay"] == 0.0  # not scaled with the batch
    others = {id(p) for g in opt.param_groups[:2] for p in g["params"]}
    assert not others & head_scales
    assert len(others) + len(head_scales) == len(list(model.parameters()))
    # the schedule multiplies it like the others: a tenth at the start of warm-up
    build_scheduler(opt, dataclasses.replace(solver, max_iter=100))
    assert opt.param_groups[2]["lr"] == pytest.approx(1.25)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)


def test_a_group_marked_mean_gradient_moves_each_parameter_as_one_number():
    # worked by hand: gradients (1, 2, 6) and (4,): the first becomes (3, 3, 3), the one
    # of a single entry keeps its own, an unmarked group is left as it is
    scale, single, other = (torch.nn.Parameter(torch.zeros(n)) for n in (3, 1, 2))
    opt = torch.optim.SGD(
        [{"params": [other]}, {"params": [scale, single], "mean_gradient": True}], lr=1.0
    )
    scale.grad, single.grad = torch.tensor([1.0, 2.0, 6.0]), torch.tensor([4.0])
    other.grad = torch.tensor([1.0, 5.0])
    average_gradients(opt)
    assert scale.grad.tolist() == [3.0, 3.0, 3.0] and single.grad.tolist() == [4.0]
    assert other.grad.tolist() == [1.0, 5.0]


def test_scales_learning_per_head_stay_equal_within_each_head(tmp_path):
    model = {**TINY_MODEL, "head_bn": False}
    solver = {"l2norm_lr": 1e3, "l2norm_per_head": True}
    config = tiny_config(tmp_path, model=model, solver=solver)
    trainer = Trainer(config, tmp_path / "out", torch.device("cpu"), progress=False)
    start = [head.norm.weight.detach().clone() for head in trainer.state.model.heads.heads]
    trainer.run()
    for before, head in zip(start, trainer.state.model.heads.heads, strict=True):
        after = head.norm.weight.detach()
        assert torch.all(after == after[0])  # one number a head
        assert not torch.equal(after, before)  # that learned


def test_the_advice_for_too_large_steps_names_the_runs_own_values():
    plain = SolverConfig(lr=0.05, warmup_iters=0.02)
    own = dataclasses.replace(plain, l2norm_lr=12.5)
    assert smaller_steps(plain) == (
        "try a lower solver.lr (0.05 here) or a longer solver.warmup_iters (0.02 here)"
    )
    assert smaller_steps(own) == (
        "try a lower solver.lr (0.05 here), a lower solver.l2norm_lr (12.5 here) "
        "or a longer solver.warmup_iters (0.02 here)"
    )
    assert smaller_steps(own, l2norm_scale=5.96) == (
        "try a lower solver.lr (0.05 here), a lower model.l2norm_scale (5.96 here), "
        "a lower solver.l2norm_lr (12.5 here) or a longer solver.warmup_iters (0.02 here)"
    )
    assert "here" not in smaller_steps()


def test_optimizer_uses_scaled_lr_and_momentum():
    model = build_model(config_from_dict(TINY))
    opt = build_optimizer(model, SolverConfig(lr=0.1, base_batch=128, batch_size=64))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[1]["weight_decay"] == 0.0


def test_a_schedule_in_fractions_gives_the_steps_of_the_absolute_one():
    absolute = SolverConfig(max_iter=500, steps=(350, 450), warmup_iters=50)
    relative = SolverConfig(max_iter=500, steps=(0.7, 0.9), warmup_iters=0.1)
    assert relative.schedule() == absolute.schedule() == (50, (350, 450))
    factors = []
    for solver in (absolute, relative):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = build_scheduler(optimizer, solver)
        lrs = []
        for _ in range(500):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        factors.append(lrs)
    assert factors[0] == factors[1]
    # and it follows max_iter: a tenth of the run is a tenth of the run
    assert SolverConfig(max_iter=30, steps=(0.7, 0.9), warmup_iters=0.1).schedule() == (
        3,
        (21, 27),
    )


def test_a_warm_up_or_step_beyond_max_iter_is_warned_about():
    shortened = SolverConfig(max_iter=30, steps=(350, 450), warmup_iters=50)
    warnings = "\n".join(schedule_warnings(shortened))
    assert "warmup_iters (50) is not below solver.max_iter (30)" in warnings
    assert "[350, 450]" in warnings and "fractions" in warnings
    assert schedule_warnings(SolverConfig(max_iter=30, steps=(0.7, 0.9), warmup_iters=0.1)) == []


def test_a_schedule_given_as_fractions_is_not_told_to_use_fractions():
    [warning] = schedule_warnings(SolverConfig(max_iter=3, steps=(0.7, 0.9), warmup_iters=0.1))
    assert warning.startswith(
        "solver.steps [3] (0.9 of 3 rounds to 3) lie at or beyond solver.max_iter (3)"
    )
    assert "fractions" not in warning
    mixed = schedule_warnings(SolverConfig(max_iter=3, steps=(0.9, 500), warmup_iters=0.1))
    assert "solver.steps [3, 500] (0.9 of 3 rounds to 3)" in mixed[0] and "fractions" in mixed[1]


@pytest.mark.parametrize("key, value", [("steps", [350.5]), ("warmup_iters", 2.5)])
def test_a_fractional_iteration_count_above_one_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"solver.{key}.*whole number of iterations"):
        config_from_dict({"solver": {key: value}})


def test_the_trainer_logs_the_schedule_warning(tmp_path, caplog):
    config = tiny_config(tmp_path, solver={"max_iter": 2, "warmup_iters": 5, "steps": [100]})
    with caplog.at_level(logging.WARNING):
        train(config, tmp_path / "run", progress=False)
    assert "the whole run stays in warm-up" in caplog.text
