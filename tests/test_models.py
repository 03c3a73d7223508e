from pathlib import Path

import pytest
import torch

from dsod.config import config_from_dict, load_config
from dsod.engine.builders import build_model, build_priors
from dsod.models.densenet import DenseBlock, Stem
from dsod.models.detector import count_parameters
from dsod.models.layers import L2Norm
from dsod.runtime.conv import CentreTapConv2d
from dsod.runtime.l2norm import ScaledL2Norm
from dsod.runtime.relu import relu_
from dsod.runtime.speed_paths import for_training

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY = {
    "model": {
        "input_size": 64,
        "stem_channels": [8, 8, 16],
        "growth_rate": 8,
        "bottleneck_width": 16,
        "block_layers": [2, 2, 2, 2],
        "backbone_out_channels": 16,
        "extra_widths": [16, 16, 8, 8, 8],
    },
    "priors": {"steps": None},
}


def test_dsod300_voc_matches_the_reference():
    cfg = load_config(CONFIGS / "dsod300_voc.yaml")
    model = build_model(cfg)
    # 14,715,804 is the spec's count of the reference network by hand.
    assert count_parameters(model) == 14_715_804
    model.eval()
    with torch.no_grad():
        sources = model.forward_sources(torch.zeros(1, 3, 300, 300))
        shapes = [tuple(s.shape[1:]) for s in sources]
        assert shapes == [
            (800, 38, 38),
            (512, 19, 19),
            (512, 10, 10),
            (256, 5, 5),
            (256, 3, 3),
            (256, 2, 2),
        ]
        logits, offsets = model.heads(sources)
    assert logits.shape == (1, 8744, 21) and offsets.shape == (1, 8744, 4)
    assert build_priors(cfg).num_priors == logits.shape[1]


def test_coco_model_has_81_classes_and_the_reference_size():
    cfg = load_config(CONFIGS / "dsod300_coco.yaml")
    model = build_model(cfg)
    assert model.num_classes == 81
    assert count_parameters(model) == 21_700_524


def test_small_variant_has_5_833_372_parameters():
    # DS/64-64-16-1: the README's count; the paper rounds it to 5.9 M.
    model = build_model(load_config(CONFIGS / "dsod300_small_voc.yaml"))
    assert count_parameters(model) == 5_833_372


def test_plain_variant_uses_only_learned_halves():
    plain = build_model(load_config(CONFIGS / "dsod300_plain_voc.yaml")).eval()
    with torch.no_grad():  # any input size: only the channels matter here
        sources = plain.forward_sources(torch.zeros(1, 3, 64, 64))
    assert [s.shape[1] for s in sources] == [800, 256, 256, 128, 128, 128]
    dense = build_model(load_config(CONFIGS / "dsod300_voc.yaml"))
    assert count_parameters(plain) < count_parameters(dense)


def test_initialisation_follows_the_reference():
    model = build_model(config_from_dict(TINY))
    head = model.heads.heads[0]
    assert torch.all(head.norm.weight == 20.0)
    assert head.loc_bn.eps == 1e-3
    assert 0.005 < head.conf.weight.std() < 0.015
    conv = model.backbone.block1.layers[0].conv1
    fan_in = conv.weight.shape[1]
    assert conv.weight.abs().max() <= (3.0 / fan_in) ** 0.5
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.all(head.conf_bn.weight == 1.0) and torch.all(head.conf_bn.bias == 0.0)
    small = build_model(
        config_from_dict({**TINY, "model": {**TINY["model"], "head_bn_init_scale": 0.1}})
    )
    assert torch.allclose(small.heads.heads[2].loc_bn.weight, torch.tensor(0.1))


def test_heads_without_batch_norm_start_at_the_prior_probability():
    config = config_from_dict(
        {**TINY, "model": {**TINY["model"], "head_bn": False, "head_prior_prob": 0.02}}
    )
    model = build_model(config)
    head = model.heads.heads[0]
    assert isinstance(head.conf_bn, torch.nn.Identity) and head.conf.bias is not None
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.heads.modules())
    for h in model.heads.heads:  # outputs from the biases alone
        torch.nn.init.zeros_(h.conf.weight)
        torch.nn.init.zeros_(h.loc.weight)
    logits, offsets = model(torch.randn(2, 3, 64, 64))
    probabilities = logits.softmax(-1)
    # background 1 - 0.02 everywhere, the rest shared by the 20 classes: 0.001 each
    assert torch.allclose(probabilities[..., 0], torch.tensor(0.98))
    assert torch.allclose(probabilities[..., 1:], torch.tensor(0.001))
    assert torch.equal(offsets, torch.zeros_like(offsets))


@pytest.mark.parametrize("lr", [0.0125, 0.1])
def test_unit_rate_scale_makes_an_sgd_step_move_an_output_by_its_gradient(lr):
    from dsod.models.heads import SourceHead, unit_rate_scale

    head = SourceHead(16, 1, 2, l2norm_scale=unit_rate_scale(lr), batch_norm=False).double()
    head.norm.weight.requires_grad_(False)  # the convolution's own step, first order exact
    x = torch.randn(1, 16, 5, 5, dtype=torch.float64)
    before = head(x)[0][0, 12, 1]  # a logit at the centre position (all 9 taps inside)
    before.backward()  # gradient 1 on that output
    with torch.no_grad():
        for p in head.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    after = head(x)[0][0, 12, 1]
    # the weights' step lowers it by lr * |patch|^2 = lr * 9 * s^2 = 1, the bias's by lr
    # (s was stored in float32)
    assert (before - after).item() == pytest.approx(1.0 + lr, rel=1e-6)


def test_heads_without_bn_take_the_unit_rate_scale_unless_the_config_gives_one():
    from dsod.engine.builders import head_input_scale
    from dsod.engine.optim import scaled_lr
    from dsod.models.heads import unit_rate_scale

    derived = config_from_dict(
        {**TINY, "model": {**TINY["model"], "head_bn": False, "l2norm_scale": None}}
    )
    assert head_input_scale(derived) == unit_rate_scale(scaled_lr(derived.solver))
    assert torch.all(
        build_model(derived).heads.heads[3].norm.weight
        == torch.tensor(unit_rate_scale(scaled_lr(derived.solver)))
    )
    given = config_from_dict(
        {**TINY, "model": {**TINY["model"], "head_bn": False, "l2norm_scale": 5.0}}
    )
    assert head_input_scale(given) == 5.0
    with_bn = config_from_dict({**TINY, "model": {**TINY["model"], "l2norm_scale": None}})
    assert head_input_scale(with_bn) == 20.0


@pytest.mark.parametrize("prediction", ["dense", "plain"])
def test_forward_backward_has_no_nan(prediction):
    raw = {**TINY, "model": {**TINY["model"], "prediction": prediction}}
    cfg = config_from_dict(raw)
    model = build_model(cfg)
    logits, offsets = model(torch.randn(2, 3, 64, 64))
    num_priors = build_priors(cfg).num_priors
    assert logits.shape == (2, num_priors, 21) and offsets.shape == (2, num_priors, 4)
    (logits.logsumexp(-1).mean() + offsets.pow(2).mean()).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(logits).all() and torch.isfinite(offsets).all()


def test_memory_efficient_mode_gives_same_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    plain = DenseBlock(4, 16, growth_rate=8, bottleneck_width=16).double()
    efficient = for_training(
        DenseBlock(4, 16, growth_rate=8, bottleneck_width=16),
        speed_paths=False,
        memory_efficient=True,
    ).double()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 16, 9, 9, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out1, out2 = plain(x1), efficient(x2)
    torch.testing.assert_close(out1, out2)
    weight = torch.randn_like(out1)
    (out1 * weight).sum().backward()
    (out2 * weight).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for (name, p1), p2 in zip(plain.named_parameters(), efficient.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=name)
    # The recomputation in backward must not update BN running statistics twice.
    for (name, b1), b2 in zip(plain.named_buffers(), efficient.buffers()):
        torch.testing.assert_close(b1, b2, msg=name)


def test_memory_efficient_stem_gives_same_outputs_gradients_and_statistics():
    torch.manual_seed(0)
    plain = Stem((8, 8, 16)).double()
    efficient = for_training(Stem((8, 8, 16)), speed_paths=False, memory_efficient=True).double()
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 20, 20, dtype=torch.float64)
    out1, out2 = plain(x), efficient(x)
    assert out1.shape == (2, 16, 5, 5)
    torch.testing.assert_close(out1, out2)
    weight = torch.randn_like(out1)
    (out1 * weight).sum().backward()
    (out2 * weight).sum().backward()
    for (name, p1), p2 in zip(plain.named_parameters(), efficient.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, msg=name)
    for (name, b1), b2 in zip(plain.named_buffers(), efficient.buffers()):
        torch.testing.assert_close(b1, b2, msg=name)
    assert int(efficient.conv1.norm.num_batches_tracked) == 1


def test_memory_efficient_whole_model_matches():
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    model = for_training(build_model(cfg))
    eff = for_training(build_model(cfg), memory_efficient=True)
    eff.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    (a, b), (c, d) = model(x), eff(x)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(b, d)
    (a.sum() + b.sum()).backward()
    (c.sum() + d.sum()).backward()
    for (name, p1), p2 in zip(model.named_parameters(), eff.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_training_gradients_are_repeatable_and_match_the_memory_efficient_mode():
    # The tiny model's last prediction layers see 1x1 maps: PyTorch's bf16 weight gradient
    # of a strided 3x3 convolution there was garbage (up to 1e31) from run to run.
    torch.manual_seed(0)
    model = for_training(build_model(config_from_dict(TINY))).train()
    eff = for_training(build_model(config_from_dict(TINY)), memory_efficient=True).train()
    eff.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    grads = []
    for net in (model, model, model, eff):
        net.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            logits, offsets = net(x)
        (logits.float().square().mean() + offsets.float().square().mean()).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert max(g.abs().max().item() for g in grads[0]) < 10
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv2d_on_a_1x1_map_uses_the_centre_tap_with_the_same_results(stride):
    torch.manual_seed(0)
    ours = CentreTapConv2d(8, 4, 3, stride=stride, padding=1, bias=True)
    plain = torch.nn.Conv2d(8, 4, 3, stride=stride, padding=1, bias=True)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(3, 8, 1, 1, dtype=torch.float64)
    ours, plain = ours.double(), plain.double()
    torch.testing.assert_close(ours(x), plain(x))
    ours(x).sum().backward()
    plain(x).sum().backward()
    torch.testing.assert_close(ours.weight.grad, plain.weight.grad)
    assert ours.weight.grad[:, :, 0].abs().sum() == 0  # only the centre tap meets the map
    y = torch.randn(2, 8, 5, 5, dtype=torch.float64)  # larger maps: the ordinary path
    torch.testing.assert_close(ours(y), plain(y))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_relu_in_place_matches_torch_in_values_and_gradients(dtype):
    torch.manual_seed(0)
    shared = torch.randn(2, 9, 4, 5).to(dtype).contiguous(memory_format=torch.channels_last)
    shared[0, 0, 0, :4] = torch.tensor([float("inf"), float("-inf"), -0.0, float("nan")])
    expected = torch.relu(shared[:, :6])
    got = relu_(shared.clone()[:, :6])  # a channel slice, as dense blocks pass them
    assert torch.equal(got.nan_to_num(), expected.nan_to_num()) and got[0, 0, 0, 3].isnan()
    assert got[0, 0, 0, 2].item() == 0.0
    leaf = shared.float().nan_to_num(0).to(dtype).requires_grad_()
    other = leaf.detach().clone().requires_grad_()
    weights = torch.randn(leaf.shape).to(dtype)
    (relu_(leaf * 1) * weights).float().sum().backward()
    (torch.relu_(other * 1) * weights).float().sum().backward()
    assert torch.equal(leaf.grad, other.grad)
    with torch.inference_mode():
        frozen = shared.clone()
        assert relu_(frozen) is frozen and torch.equal(
            frozen.nan_to_num(), torch.relu(shared).nan_to_num()
        )


@pytest.mark.parametrize("l2norm", [L2Norm, ScaledL2Norm])
def test_l2norm_by_hand(l2norm):
    norm = l2norm(2, initial_scale=2.0)
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # |x| = 5
    with torch.no_grad():
        assert norm(x).flatten().tolist() == pytest.approx([1.2, 1.6])
    x.requires_grad_(True)
    y = norm(x)
    assert y.flatten().tolist() == pytest.approx([1.2, 1.6])
    # d(sum y)/dx = w (1 - n <1, n>) / |x| with n = (0.6, 0.8): 2 * (1 - 1.4 * n) / 5
    y.sum().backward()
    assert x.grad.flatten().tolist() == pytest.approx([0.064, -0.048])
    assert norm.weight.grad.tolist() == pytest.approx([0.6, 0.8])


@pytest.mark.parametrize("l2norm", [L2Norm, ScaledL2Norm])
def test_l2norm_under_bf16_autocast_stays_bf16_and_follows_fp32(l2norm):
    """A bf16 map gives a bf16 output and input gradient (an fp32 scale used to promote
    both to fp32), the scale's gradient stays fp32, and all are fp32's up to bf16 rounding."""
    torch.manual_seed(0)
    norm = l2norm(16)
    with torch.no_grad():
        norm.weight.uniform_(5.0, 20.0)
    x = torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 16, 5, 5)
    x32 = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(norm(x32), (x32, norm.weight), grad)
    x16 = x.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", torch.bfloat16):
        y16 = norm(x16)
        with torch.no_grad():
            plain = norm(x16)
    assert y16.dtype == plain.dtype == torch.bfloat16 and torch.equal(y16, plain)
    got = torch.autograd.grad(y16, (x16, norm.weight), grad.bfloat16())
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    torch.testing.assert_close(y16.float(), norm(x).detach(), rtol=2e-2, atol=2e-2)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.float(), e, rtol=3e-2, atol=3e-2 * e.abs().max().item())


@pytest.mark.parametrize("l2norm", [L2Norm, ScaledL2Norm])
def test_l2norm_backward_matches_autograd_of_the_formula(l2norm):
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    norm = l2norm(6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 3.0)
    assert torch.autograd.gradcheck(norm, (x,))
    grad = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    formula = x / x.pow(2).sum(1, keepdim=True).sqrt() * norm.weight.view(1, -1, 1, 1)
    expected = torch.autograd.grad(formula, (x, norm.weight), grad)
    got = torch.autograd.grad(norm(x), (x, norm.weight), grad)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
    # Channels-last fp32, with and without autograd: the same values.
    x32 = x.detach().float().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    norm32 = norm.float()
    with torch.no_grad():
        plain = norm32(x32)
    torch.testing.assert_close(norm32(x32), plain)
    torch.testing.assert_close(plain, formula.detach().float())
