import copy

import torch
from conftest import TINY_MODEL, assert_same_detections
from torch import nn

from dsod.config import config_from_dict
from dsod.engine.builders import build_model, build_postprocessor
from dsod.models.densenet import DenseBlock
from dsod.runtime.fold import (
    ClampedConv1x1,
    FoldedDenseLayer,
    FrozenBatchNorm,
    fold_bn_into_conv,
    fuse_for_inference,
)
from dsod.runtime.shared_block import SharedBufferDenseBlock
from dsod.runtime.speed_paths import store_weights_in, switch

TINY = {"model": dict(TINY_MODEL), "priors": {"steps": None}}
# A BN epsilon that vanishes against the variances below in fp32 (1 + 1e-12 == 1), so that
# worked numbers stay exact; torch 2.11's batch_norm refuses an epsilon of 0.
TINY_EPS = 1e-12


def trained_looking(model: nn.Module) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters, and every convolution
    bias (the heads' without BN) values away from its start, as after training."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data.uniform_(-1.0, 1.0)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def assert_same_outputs_and_detections(config, reference, candidate, images, sizes):
    """Both networks' raw outputs on ``images`` agree, and so do their detections."""
    with torch.inference_mode():
        logits, offsets = reference(images)
        other_logits, other_offsets = candidate(images)
    torch.testing.assert_close(other_logits, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(other_offsets, offsets, rtol=1e-4, atol=1e-4)
    post = build_postprocessor(config)
    for a, b in zip(post(logits, offsets, sizes), post(other_logits, other_offsets, sizes)):
        assert len(a) > 0
        assert_same_detections(a, b, post)


def test_fold_bn_into_conv_by_hand():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    conv.weight.data.fill_(2.0)
    norm = nn.BatchNorm2d(1, eps=TINY_EPS).eval()
    norm.running_mean.fill_(1.0)
    norm.running_var.fill_(4.0)
    norm.weight.data.fill_(3.0)
    norm.bias.data.fill_(0.5)
    fused = fold_bn_into_conv(conv, norm)
    # norm(conv(x)) = 3 * (2x - 1) / 2 + 0.5 = 3x - 1
    assert fused.weight.item() == 3.0 and fused.bias.item() == -1.0


def test_frozen_batch_norm_by_hand_on_a_channel_slice():
    norm = nn.BatchNorm2d(2, eps=TINY_EPS).eval()
    norm.running_mean.copy_(torch.tensor([1.0, 0.0]))
    norm.running_var.copy_(torch.tensor([4.0, 1.0]))
    norm.weight.data.copy_(torch.tensor([3.0, -1.0]))
    norm.bias.data.copy_(torch.tensor([0.5, 2.0]))
    frozen = FrozenBatchNorm(norm)
    # channel 0: 3 * (x - 1) / 2 + 0.5 = 1.5x - 1; channel 1: -x + 2
    assert frozen.scale.flatten().tolist() == [1.5, -1.0]
    assert frozen.shift.flatten().tolist() == [-1.0, 2.0]
    shared = torch.randn(1, 5, 3, 4).contiguous(memory_format=torch.channels_last)
    piece = shared[:, :2]  # a dense block's slice: not contiguous
    expected = torch.stack([1.5 * piece[:, 0] - 1, -piece[:, 1] + 2], 1)
    torch.testing.assert_close(frozen(piece), expected)
    torch.testing.assert_close(frozen(piece), norm(piece))
    assert frozen(piece.bfloat16()).dtype == torch.bfloat16


def test_fused_model_gives_the_same_outputs_and_detections():
    config = config_from_dict(TINY)
    model = trained_looking(build_model(config))
    fused = fuse_for_inference(model)
    norms = lambda m: sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert norms(model) > 0 and norms(fused) == 0  # each folded or frozen
    kinds = {type(x) for x in fused.modules()}
    assert {ClampedConv1x1, FoldedDenseLayer} <= kinds and FrozenBatchNorm not in kinds
    assert_same_outputs_and_detections(
        config, model, fused, torch.randn(3, 3, 64, 64), [(64, 64), (100, 80), (50, 70)]
    )
    assert model.training is False and isinstance(model.heads.heads[0].conf_bn, nn.BatchNorm2d)


def _detections(config, model, images, channels_last=False, grad=False):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.set_grad_enabled(grad):
        logits, offsets = model(images)
    sizes = [(64, 64)] * len(images)
    return logits.detach(), build_postprocessor(config)(logits.detach(), offsets.detach(), sizes)


def test_every_fast_path_gives_the_same_detections():
    """The reference is the training-time path (autograd on: dense blocks concatenate); the
    fast paths are the shared-storage dense blocks (no autograd), channels_last and BN folded
    into the convolutions, alone and together."""
    config = config_from_dict(TINY)
    model = trained_looking(build_model(config))
    images = torch.randn(2, 3, 64, 64)
    ref_logits, reference = _detections(config, model, images, grad=True)
    fused = fuse_for_inference(model)
    shared = switch(copy.deepcopy(model), {DenseBlock: SharedBufferDenseBlock})
    for name, (net, channels_last) in {
        "shared storage": (shared, False),
        "channels_last": (model, True),
        "shared storage + channels_last": (shared, True),
        "folded BN": (fused, False),
        "folded BN + channels_last": (fused, True),
    }.items():
        logits, detections = _detections(config, net, images.clone(), channels_last)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4, msg=name)
        for a, b in zip(reference, detections):
            assert len(a) > 0, name
            assert_same_detections(a, b, build_postprocessor(config), name=name)


def _bn(scale: list[float], shift: list[float]) -> nn.BatchNorm2d:
    """An eval-mode BN computing ``x * scale + shift`` per channel."""
    norm = nn.BatchNorm2d(len(scale), eps=TINY_EPS).eval()
    norm.weight.data.copy_(torch.tensor(scale))
    norm.bias.data.copy_(torch.tensor(shift))
    return norm


def test_clamped_conv_by_hand():
    # Channel 0: relu(2x - 4) switches on at x = 2 (lower bound); channel 1: relu(-x + 1)
    # is on below x = 1 (upper bound); channel 2: relu(0x + 3) is the constant 3.
    norm = _bn([2.0, -1.0, 0.0], [-4.0, 1.0, 3.0])
    conv = nn.Conv2d(3, 1, 1, bias=False)
    conv.weight.data.copy_(torch.tensor([1.0, 10.0, 100.0]).view(1, 3, 1, 1))
    unit = ClampedConv1x1(norm, conv)
    assert unit.lower.flatten().tolist() == [2.0, float("-inf"), float("-inf")]
    assert unit.upper.flatten().tolist() == [float("inf"), 1.0, float("inf")]
    assert not unit.lower_only
    # weights s * w = [2, -10, 0]; bias w . t = -4 + 10 + 300
    assert unit.conv.weight.flatten().tolist() == [2.0, -10.0, 0.0]
    assert unit.conv.bias.item() == 306.0
    x = torch.tensor([[3.0, 0.0, 7.0], [0.0, 5.0, -7.0]]).view(2, 3, 1, 1)
    # first pixel: relu(2) + 10 relu(1) + 300 = 312; second: 0 + 0 + 300
    assert unit(x).flatten().tolist() == [312.0, 300.0]


def test_clamped_conv_with_switch_points_out_of_fp16_range():
    # relu(1e-5 x - 1): on only above x = 1e5, beyond fp16's 65504: always off;
    # relu(1e-5 x + 1): always on. fp16 must give finite numbers, not inf * 0.
    norm = _bn([1e-5, 1e-5], [-1.0, 1.0])
    conv = nn.Conv2d(2, 2, 1, bias=False)
    conv.weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
    unit = ClampedConv1x1(norm, conv)
    x = torch.tensor([[100.0, -100.0]]).view(1, 2, 1, 1)
    expected = conv(torch.relu(norm(x)))
    torch.testing.assert_close(unit(x), expected)
    half = ClampedConv1x1(norm, conv).half()
    out = half(x.half())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, rtol=1e-3, atol=1e-3)


def test_clamped_conv_matches_bn_relu_conv_on_random_units():
    torch.manual_seed(1)
    for positive_only in (True, False):
        norm = trained_looking(nn.Sequential(nn.BatchNorm2d(16)))[0]
        if not positive_only:
            norm.weight.data[::3] *= -1
        conv = nn.Conv2d(16, 8, 1, stride=2, bias=False)
        unit = ClampedConv1x1(norm, conv)
        assert unit.lower_only is positive_only
        shared = torch.randn(2, 20, 9, 9).contiguous(memory_format=torch.channels_last)
        x = shared[:, :16]  # a dense block's slice: not contiguous
        torch.testing.assert_close(unit(x), conv(torch.relu(norm(x))), rtol=1e-5, atol=1e-5)


def test_weights_stored_in_the_autocast_dtype_give_the_same_outputs():
    config = config_from_dict(TINY)
    fused = fuse_for_inference(trained_looking(build_model(config)))
    stored = store_weights_in(fuse_for_inference(fused), torch.bfloat16)  # folding twice: a no-op
    assert stored.heads.heads[0].conf.weight.dtype == torch.bfloat16
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        expected, got = fused(images), stored(images)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
