import pytest

from dsod.config import SolverConfig, config_from_dict
from dsod.engine.optim import build_optimizer, lr_factor, parameter_groups, scaled_lr
from dsod.models.detector import build_model

from conftest import TINY_MODEL

TINY = {"model": dict(TINY_MODEL),
        "priors": {"steps": None}}


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


def test_optimizer_uses_scaled_lr_and_momentum():
    model = build_model(config_from_dict(TINY))
    opt = build_optimizer(model, SolverConfig(lr=0.1, base_batch=128, batch_size=64))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.param_groups[0]["momentum"] == 0.9
    assert opt.param_groups[1]["weight_decay"] == 0.0
