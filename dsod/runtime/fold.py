"""BN folding: the paper's BN-ReLU-conv units, dense layers, stem and heads at inference,
with every BN folded into a convolution.

A BN that directly follows a bias-free convolution whose output feeds nothing else is an
affine map per output channel, so it folds into that convolution's weights and a bias
(:func:`fold_bn_into_conv`). In DSOD that is the BN inside each dense layer (after the 1x1
bottleneck), the stem's BNs, the heads' BNs and the BN after each learning half's 1x1
reduction.

The pre-activation units (BN-ReLU-conv) read concatenations that many layers share: each
reader has its own BN, so it cannot go into the convolution that wrote the features. Where
the convolution after the ReLU is a 1x1 one (every dense layer's bottleneck, the
transitions, the prediction layers' reductions) BN and ReLU fold into it and a per-channel
clamp (:class:`ClampedConv1x1`); what is left (a 3x3 after BN-ReLU, as none in DSOD300 after
folding) becomes :class:`FrozenBatchNorm`, the same affine map in one pass.

Folded, the network must give the eval-mode paper network's outputs up to float rounding
(``tests/test_fuse.py``); the copy is for inference only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dsod.models.densenet import DenseLayer
from dsod.models.heads import SourceHead
from dsod.models.layers import BnReluConv, ConvBnRelu
from dsod.models.prediction import LearningHalf

# fp16's largest finite value: a ClampedConv1x1 switch point beyond it cannot be stored in
# fp16, so such channels are taken as always on or always off (exact below this magnitude).
_SWITCH_LIMIT = 65504.0


@torch.no_grad()
def batch_norm_affine(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BN as ``(scale [C], shift [C])``: ``norm(x) = x * scale + shift`` per
    channel."""
    scale = norm.running_var.add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


class FrozenBatchNorm(nn.Module):
    """An eval-mode BN as a per-channel scale and shift: ``x * scale + shift``.

    One fused multiply-add pass (``torch.addcmul``) in the input's dtype: on the CPU faster
    than ``batch_norm`` on what DSOD feeds it at inference, a channel slice of a dense
    block's shared output, which is not contiguous.
    Input and output: ``[B, C, H, W]``.
    """

    def __init__(self, norm: nn.BatchNorm2d) -> None:
        super().__init__()
        scale, shift = batch_norm_affine(norm)
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.to(x.dtype), x, self.scale.to(x.dtype))


def _freeze_batch_norms(module: nn.Module) -> None:
    """Replace every BN under ``module`` by its :class:`FrozenBatchNorm`, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.track_running_stats:
            setattr(module, name, FrozenBatchNorm(child))
        else:
            _freeze_batch_norms(child)


def fold_bn_into_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution equal to ``norm(conv(x))`` with ``norm`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        fused.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
    return fused


class ClampedConv1x1(nn.Module):
    """``conv(relu(norm(x)))`` for an eval-mode BN and a 1x1 convolution, as one per-channel
    clamp of ``x`` and a 1x1 convolution with the BN folded in.

    Per channel, with ``norm(x) = s * x + t`` and ``m = -t / s`` the point where the ReLU
    switches on, ``relu(s * x + t)`` is ``s * max(x, m) + t`` for ``s > 0``, ``s * min(x, m)
    + t`` for ``s < 0`` and the constant ``relu(t)`` for ``s = 0``. A 1x1 convolution without
    padding acts on each pixel alone, so ``s`` goes into its weights and ``t`` into its bias,
    and only the clamp is left to run over ``x``: one elementwise pass that reads ``x`` and
    writes the result, where BN and ReLU took two. Where every ``s`` is positive the clamp
    is a ``torch.maximum`` (a bf16 clamp with two bounds is slower). Channels whose switch
    point lies beyond +-65,504 (fp16's range) are taken as always on or always off, which is
    exact for every smaller activation.

    Input ``[B, C_in, H, W]`` (any layout; a non-contiguous channel slice is fine), output
    ``[B, C_out, H', W']`` as the convolution's (its stride is kept).
    """

    def __init__(self, norm: nn.BatchNorm2d | FrozenBatchNorm, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != (1, 1) or conv.padding != (0, 0) or conv.groups != 1:
            raise ValueError(
                f"ClampedConv1x1 needs a 1x1 convolution without padding or groups, got {conv}"
            )
        with torch.no_grad():
            if isinstance(norm, FrozenBatchNorm):
                scale, shift = norm.scale.flatten(), norm.shift.flatten()
            else:
                scale, shift = batch_norm_affine(norm)
            scale, shift = scale.double(), shift.double()
            switch = -shift / torch.where(scale == 0, torch.ones_like(scale), scale)
            infinity = torch.full_like(scale, float("inf"))
            always_on = torch.where(scale > 0, switch < -_SWITCH_LIMIT, switch > _SWITCH_LIMIT)
            constant = (scale == 0) | (~always_on & (switch.abs() > _SWITCH_LIMIT))
            clamped = ~(always_on | constant)
            lower = torch.where(clamped & (scale > 0), switch, -infinity)
            upper = torch.where(clamped & (scale < 0), switch, infinity)
            # relu(norm(x)) = factor * clamp(x, lower, upper) + offset, channel by channel
            factor = torch.where(constant, torch.zeros_like(scale), scale)
            offset = torch.where(constant, shift.clamp_min(0), shift)
            weight = conv.weight.double()
            bias = (
                conv.bias.double()
                if conv.bias is not None
                else torch.zeros(conv.out_channels, dtype=torch.float64, device=weight.device)
            )
            self.conv = nn.Conv2d(
                conv.in_channels, conv.out_channels, 1, conv.stride, bias=True
            ).to(conv.weight.device, conv.weight.dtype)
            self.conv.weight.copy_(weight * factor.view(1, -1, 1, 1))
            self.conv.bias.copy_(bias + weight.flatten(1) @ offset)
        self.lower_only = bool(torch.isinf(upper).all())
        self.register_buffer("lower", lower.float().reshape(1, -1, 1, 1))
        self.register_buffer("upper", upper.float().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower = self.lower.to(x.dtype)
        if self.lower_only:
            return self.conv(torch.maximum(x, lower))
        return self.conv(torch.clamp(x, lower, self.upper.to(x.dtype)))


class FoldedDenseLayer(nn.Module):
    """A :class:`~dsod.models.densenet.DenseLayer` for inference: BN1-ReLU-conv1x1-BN2 as
    one :class:`ClampedConv1x1`, then the layer's second ReLU and its 3x3 convolution.
    Same interface: the list of the block's earlier maps in, ``[B, growth_rate, H, W]``
    out."""

    def __init__(self, layer: DenseLayer) -> None:
        super().__init__()
        self.bottleneck = ClampedConv1x1(layer.norm1, fold_bn_into_conv(layer.conv1, layer.norm2))
        self.relu = layer.relu2
        self.conv2 = layer.conv2

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        return self.conv2(self.relu(self.bottleneck(x)))


def _folded(module: nn.Module) -> nn.Module | None:
    """The inference replacement of ``module`` (its BNs folded), or None to look inside it.
    Runs on a copy in eval mode; parts folded before are left as they are."""
    if isinstance(module, DenseLayer):
        return FoldedDenseLayer(module)
    if (
        isinstance(module, BnReluConv)
        and isinstance(module.norm, nn.BatchNorm2d)
        and module.conv.kernel_size == (1, 1)
        and module.conv.padding == (0, 0)
    ):
        return ClampedConv1x1(module.norm, module.conv)
    if isinstance(module, ConvBnRelu) and isinstance(module.norm, nn.BatchNorm2d):
        module.conv = fold_bn_into_conv(module.conv, module.norm)
        module.norm = nn.Identity()
    elif isinstance(module, SourceHead) and isinstance(module.loc_bn, nn.BatchNorm2d):
        module.loc = fold_bn_into_conv(module.loc, module.loc_bn)
        module.loc_bn = nn.Identity()
        module.conf = fold_bn_into_conv(module.conf, module.conf_bn)
        module.conf_bn = nn.Identity()
    elif isinstance(module, LearningHalf) and isinstance(module.down.norm, nn.BatchNorm2d):
        # The BN of the 3x3 unit reads only the 1x1 reduction's output: fold it there.
        module.reduce.conv = fold_bn_into_conv(module.reduce.conv, module.down.norm)
        module.down.norm = nn.Identity()
    return None


def _fold_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        replacement = _folded(child)
        if replacement is not None:
            setattr(module, name, replacement)
        else:
            _fold_children(child)


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold ``model``'s BNs into convolutions where they can be and freeze the others into
    :class:`FrozenBatchNorm` (see the module docstring), in place; returns ``model``. The
    BNs are taken in eval mode; parts folded before are left as they are."""
    _fold_children(model)
    _freeze_batch_norms(model)
    return model


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with its BNs folded (:func:`fold_batch_norms`);
    ``model`` is left as it is.

    Outputs equal the eval-mode model's up to float rounding. The copy is for inference
    only: training it would train a different network.
    """
    return fold_batch_norms(copy.deepcopy(model).eval())
