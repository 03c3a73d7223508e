"""Small building blocks shared by the backbone, the prediction structure and the heads."""

from __future__ import annotations

import math
from typing import Any

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


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves a 1x1 map (odd kernel, "same" padding, no dilation)
    with its kernel's centre tap alone: every other tap meets only padding, so the result
    and all gradients are the same. On the CPU, PyTorch's bf16 weight gradient of a
    strided 3x3 convolution over a 1x1 map is garbage from run to run (up to 1e31; torch
    2.14.1, oneDNN), which small inputs reach in the last prediction layers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        if torch.jit.is_tracing() or x.shape[-2:] != (1, 1) or kh % 2 == 0 or kw % 2 == 0 \
                or self.padding != (kh // 2, kw // 2) or self.dilation != (1, 1) \
                or self.padding_mode != "zeros":
            return super().forward(x)
        centre = self.weight[:, :, kh // 2:kh // 2 + 1, kw // 2:kw // 2 + 1]
        return torch.nn.functional.conv2d(x, centre, self.bias, self.stride, 0, 1, self.groups)


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free convolution with "same" padding for odd kernels and Caffe Xavier init
    (:class:`Conv2d`)."""
    layer = Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                   padding=kernel_size // 2, bias=False)
    caffe_xavier_(layer.weight)
    return layer


class _SignBitReLU(torch.autograd.Function):
    """In-place ReLU of a 16-bit float tensor through its integer bits, with ReLU's
    gradient (``threshold_backward`` on the output, as autograd's own ReLU)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x.view(torch.int16).clamp_(min=0)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, output, 0)


def relu_(x: torch.Tensor) -> torch.Tensor:
    """``F.relu(x, inplace=True)``, with the same values and gradients.

    On the CPU a bf16 or fp16 tensor is rectified through its bits read as int16: a 16-bit
    float is negative exactly when its sign bit, the integer's, is set, so clamping the
    integers at 0 zeroes the negative numbers (a negative NaN too, where ReLU keeps NaN).
    PyTorch's bf16 ReLU converts every element to fp32 and back: on 2 cores with AVX-512
    this is 4.7 times as fast, and DSOD runs some 80 ReLUs per image.
    """
    if x.dtype not in (torch.bfloat16, torch.float16) or x.device.type != "cpu" \
            or torch.compiler.is_compiling():
        return torch.nn.functional.relu(x, inplace=True)
    if torch.is_grad_enabled() and x.requires_grad:
        return _SignBitReLU.apply(x)
    x.view(torch.int16).clamp_(min=0)
    return x


class ReLU(nn.Module):
    """In-place ReLU as :func:`relu_` computes it (``nn.ReLU(inplace=True)`` otherwise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_(x)


def max_pool() -> nn.MaxPool2d:
    """The reference's only pooling: 2x2, stride 2, CEIL rounding (75 -> 38, 5 -> 3)."""
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)


class BnReluConv(nn.Sequential):
    """Pre-activation unit: BN - ReLU - conv (no bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = ReLU()
        self.conv = conv(in_channels, out_channels, kernel_size, stride)


class ConvBnRelu(nn.Sequential):
    """Post-activation unit of the stem: conv (no bias) - BN - ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1) -> None:
        super().__init__()
        self.conv = conv(in_channels, out_channels, kernel_size, stride)
        self.norm = nn.BatchNorm2d(out_channels)
        self.relu = ReLU()


def _inverse_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / max(||x||, eps)`` over the channels: ``[B, C, H, W] -> [B, 1, H, W]``. One
    read of ``x`` (no squared copy); the sum of squares accumulates in fp32 for fp16/bf16."""
    return torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(eps).reciprocal()


class _ScaledL2Normalize(torch.autograd.Function):
    """``y = x / max(||x||, eps) * w`` with a hand-written backward.

    With ``n = x / ||x||`` and ``u = g * w`` (``g`` the output's gradient):
    ``dL/dw = sum over B, H, W of g * n`` and ``dL/dx = (u - n * <u, n>) / ||x||``, the
    projection of ``u`` off ``n``. Autograd through the elementwise formula makes about
    twice as many passes over the ``[B, C, H, W]`` map; on DSOD300's 800 x 38 x 38 source
    this one is twice as fast forward and backward (CPU, batch 8).

    Everything runs in ``x``'s dtype (the scale is cast to it, as autocast casts a
    convolution's weight), so a bf16 map stays bf16: with the fp32 scale the output and
    the whole backward were fp32, each multiply mixing dtypes (2-3 times as slow on the
    CPU) and the heads casting the map back. ``dL/dw`` is summed in fp32 at least.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        inverse = _inverse_norm(x, eps)
        normalised = x * inverse
        ctx.save_for_backward(normalised, inverse, weight)
        return normalised * weight.to(x.dtype).view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        normalised, inverse, weight = ctx.saved_tensors
        grad = grad.to(normalised.dtype)
        wide = torch.promote_types(normalised.dtype, torch.float32)  # fp32, or fp64 as given
        grad_weight = (grad * normalised).sum((0, 2, 3), dtype=wide).to(weight.dtype)
        grad_normalised = grad * weight.to(grad.dtype).view(1, -1, 1, 1)
        along = (grad_normalised * normalised).sum(1, keepdim=True)
        grad_x = torch.addcmul(grad_normalised, normalised, along, value=-1).mul_(inverse)
        return grad_x, grad_weight, None


class L2Norm(nn.Module):
    """L2 normalisation across channels at every position, times a learned per-channel scale.

    Input and output: ``[B, C, H, W]``. The scale starts at ``initial_scale`` (20 in SSD and
    DSOD) so that normalised features are not too small for the heads to learn from. The
    norm is clamped to at least ``eps``. The output has ``x``'s dtype (under autocast the
    reduced one: the scale is cast to it as a convolution's weight is). With autograd the
    backward pass is hand-written (:class:`_ScaledL2Normalize`, checked against autograd
    by ``tests/test_models.py``);
    without, plain tensor operations (which export and compile as they are).
    """

    def __init__(self, channels: int, initial_scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(initial_scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _ScaledL2Normalize.apply(x, self.weight, self.eps)
        return x * _inverse_norm(x, self.eps) * self.weight.to(x.dtype).view(1, -1, 1, 1)
