"""Inference-only rewrite of a trained DSOD: BN folded into the convolution before it.

A BN that directly follows a bias-free convolution whose output feeds nothing else is an
affine map per output channel, so it can be folded into that convolution's weights and a
bias. In DSOD that is the BN inside each dense layer (after the 1x1 bottleneck), the stem's
BNs and the heads' BNs. The pre-activation BNs (BN-ReLU-conv) read concatenations that many
layers share and stay as they are.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dsod.models.densenet import DenseLayer
from dsod.models.heads import SourceHead
from dsod.models.layers import ConvBnRelu


def fold_bn_into_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution equal to ``norm(conv(x))`` with ``norm`` in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        fused.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
    return fused


@torch.no_grad()
def fuse_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every foldable BN folded (see module docstring).

    Outputs equal the eval-mode model's up to float rounding. The copy is for inference
    only: training it would train a different network.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, DenseLayer):
            module.conv1 = fold_bn_into_conv(module.conv1, module.norm2)
            module.norm2 = nn.Identity()
        elif isinstance(module, ConvBnRelu):
            module.conv = fold_bn_into_conv(module.conv, module.norm)
            module.norm = nn.Identity()
        elif isinstance(module, SourceHead):
            module.loc = fold_bn_into_conv(module.loc, module.loc_bn)
            module.loc_bn = nn.Identity()
            module.conf = fold_bn_into_conv(module.conf, module.conf_bn)
            module.conf_bn = nn.Identity()
    return fused
