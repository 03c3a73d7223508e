"""The switch between the paper's modules and the speed paths (dsod.runtime.speed_paths):
the same parameters and checkpoints, and the same numbers either way."""

import copy

import pytest
import torch
from test_fuse import TINY, assert_same_outputs_and_detections, trained_looking
from torch import nn

from dsod.config import config_from_dict
from dsod.engine.builders import build_model
from dsod.runtime.conv import CentreTapConv2d
from dsod.runtime.recompute import RecomputedDenseLayer, RecomputedStem
from dsod.runtime.speed_paths import for_inference, for_training

RUNTIME = "dsod.runtime."


def runtime_modules(model: nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if type(m).__module__.startswith(RUNTIME)}


@pytest.mark.parametrize(
    "speed_paths, memory_efficient", [(True, False), (True, True), (False, True), (False, False)]
)
def test_for_training_keeps_parameters_and_state_dict_keys(speed_paths, memory_efficient):
    model = build_model(config_from_dict(TINY))
    keys, parameters = list(model.state_dict()), list(model.parameters())
    assert for_training(model, speed_paths=speed_paths, memory_efficient=memory_efficient) is model
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    kinds = runtime_modules(model)
    assert ("CentreTapConv2d" in kinds) is speed_paths
    assert ("SignBitReLU" in kinds and "ScaledL2Norm" in kinds) is speed_paths
    assert ({"RecomputedDenseLayer", "RecomputedStem"} <= kinds) is memory_efficient
    # Switched again without speed paths: the paper's modules, the same parameters.
    for_training(model, speed_paths=False)
    assert runtime_modules(model) == set()
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))


@pytest.mark.parametrize(
    "speed_paths, memory_efficient", [(True, False), (True, True), (False, True)]
)
def test_training_paths_give_the_paper_modules_outputs_gradients_and_statistics(
    speed_paths, memory_efficient
):
    paper = build_model(config_from_dict(TINY)).double().train()
    fast = for_training(
        copy.deepcopy(paper), speed_paths=speed_paths, memory_efficient=memory_efficient
    )
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outputs = [net(x) for net in (paper, fast)]
    for a, b in zip(*outputs):
        torch.testing.assert_close(b, a)
    for logits, offsets in outputs:
        (logits.square().mean() + offsets.square().mean()).backward()
    for (name, p1), p2 in zip(paper.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p2.grad, p1.grad, msg=name)
    for (name, b1), b2 in zip(paper.named_buffers(), fast.buffers(), strict=True):
        torch.testing.assert_close(b2, b1, msg=name)  # BN statistics updated once


def test_bf16_weight_gradient_over_a_1x1_map_is_repeatable_through_for_training():
    """PyTorch's CPU bf16 weight gradient of a strided 3x3 convolution over a 1x1 map
    varies from run to run (up to 1e31); switched for training, the centre tap computes it."""
    for _ in range(10):
        unit = for_training(nn.Sequential(nn.Conv2d(16, 8, 3, stride=2, padding=1, bias=False)))
        assert isinstance(unit[0], CentreTapConv2d)
        x = torch.randn(2, 16, 1, 1).contiguous(memory_format=torch.channels_last)
        grads = []
        for _ in range(3):
            unit.zero_grad()
            with torch.autocast("cpu", torch.bfloat16):
                y = unit(x)
            y.float().square().sum().backward()
            grads.append(unit[0].weight.grad.clone())
        assert grads[0].abs().max() < 100
        assert all(torch.equal(grads[0], g) for g in grads[1:])


@pytest.mark.parametrize("channels_last, head_bn", [(False, True), (True, True), (True, False)])
def test_inference_with_and_without_speed_paths_gives_the_same_detections(channels_last, head_bn):
    config = config_from_dict({**TINY, "model": {**TINY["model"], "head_bn": head_bn}})
    model = for_training(trained_looking(build_model(config)), memory_efficient=True)
    plain = for_inference(
        model, speed_paths=False, channels_last=channels_last, dtype=torch.bfloat16
    )
    fast = for_inference(model, channels_last=channels_last)
    assert runtime_modules(plain) == set() and not plain.training
    assert plain.heads.heads[0].conf.weight.dtype == torch.float32  # no weights in bf16
    assert {
        "ClampedConv1x1",
        "FoldedDenseLayer",
        "SharedBufferDenseBlock",
        "SignBitReLU",
    } <= runtime_modules(fast)
    assert isinstance(model.backbone.stem, RecomputedStem)  # the model is left alone
    assert isinstance(model.backbone.block1.layers[0], RecomputedDenseLayer)
    images = torch.randn(3, 3, 64, 64)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    assert_same_outputs_and_detections(
        config, plain, fast, images, [(64, 64), (100, 80), (50, 70)]
    )
