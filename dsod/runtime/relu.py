"""16-bit ReLU: the paper's in-place ReLUs of bf16 and fp16 CPU tensors, computed on the
integer bits.

A 16-bit float is negative exactly when its sign bit, the int16's, is set, so clamping the
tensor's bits read as int16 at 0 zeroes the negative numbers (a negative NaN too, where
ReLU keeps NaN). PyTorch's bf16 ReLU converts every element to fp32 and back, which this
avoids, and DSOD runs some 80 ReLUs per image (docs/PERFORMANCE.md). Must give
the values and gradients of ``F.relu(x, inplace=True)`` (``tests/test_models.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


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
    """``F.relu(x, inplace=True)``, with the same values and gradients, through the int16
    bits for a bf16 or fp16 CPU tensor (eagerly; compiled, Inductor fuses ReLU itself).
    Any shape and layout (a non-contiguous channel slice too)."""
    if (
        x.dtype not in (torch.bfloat16, torch.float16)
        or x.device.type != "cpu"
        or torch.compiler.is_compiling()
    ):
        return F.relu(x, inplace=True)
    if torch.is_grad_enabled() and x.requires_grad:
        return _SignBitReLU.apply(x)
    x.view(torch.int16).clamp_(min=0)
    return x


class SignBitReLU(nn.ReLU):
    """``nn.ReLU`` computing an in-place ReLU as :func:`relu_` does (out of place, as
    ``nn.ReLU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_(x) if self.inplace else F.relu(x)
