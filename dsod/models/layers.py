"""Small building blocks shared by the backbone, the prediction structure and the heads.

Plain PyTorch modules, as the paper draws them; their faster twins for training and
inference live in :mod:`dsod.runtime` and are swapped in by
:mod:`dsod.runtime.speed_paths`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def caffe_xavier_(weight: torch.Tensor) -> torch.Tensor:
    """Caffe's "xavier" filler: uniform in ``+-sqrt(3 / fan_in)``.

    This is what the reference's prototxt asks for; PyTorch's ``xavier_uniform_`` averages
    fan-in and fan-out instead, which gives other scales for 1x1 bottlenecks.
    """
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    bound = math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free convolution with "same" padding for odd kernels and Caffe Xavier init."""
    layer = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
    )
    caffe_xavier_(layer.weight)
    return layer


def max_pool() -> nn.MaxPool2d:
    """The reference's only pooling: 2x2, stride 2, CEIL rounding (75 -> 38, 5 -> 3)."""
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)


class BnReluConv(nn.Sequential):
    """Pre-activation unit: BN - ReLU - conv (no bias)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = conv(in_channels, out_channels, kernel_size, stride)


class ConvBnRelu(nn.Sequential):
    """Post-activation unit of the stem: conv (no bias) - BN - ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = conv(in_channels, out_channels, kernel_size, stride)
        self.norm = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)


def inverse_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / max(||x||, eps)`` over the channels: ``[B, C, H, W] -> [B, 1, H, W]``. One
    read of ``x`` (no squared copy); the sum of squares accumulates in fp32 for fp16/bf16."""
    return torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(eps).reciprocal()


class L2Norm(nn.Module):
    """L2 normalisation across channels at every position, times a learned per-channel scale.

    Input and output: ``[B, C, H, W]``. The scale starts at ``initial_scale`` (20 in SSD and
    DSOD) so that normalised features are not too small for the heads to learn from. The
    norm is clamped to at least ``eps``. The output has ``x``'s dtype (under autocast the
    reduced one: the scale is cast to it as a convolution's weight is). Autograd runs
    through the formula.
    """

    def __init__(self, channels: int, initial_scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(initial_scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * inverse_norm(x, self.eps) * self.weight.to(x.dtype).view(1, -1, 1, 1)
