"""L2Norm with a hand-written backward: the heads' L2 normalisation (DSOD Sec. 3.1,
after SSD) in fewer passes.

With ``n = x / ||x||`` and ``u = g * w`` (``g`` the output's gradient):
``dL/dw = sum over B, H, W of g * n`` and ``dL/dx = (u - n * <u, n>) / ||x||``, the
projection of ``u`` off ``n``. Autograd through the elementwise formula makes about twice
as many passes over the ``[B, C, H, W]`` map; on DSOD300's 800 x 38 x 38 source this one
is twice as fast forward and backward (CPU, batch 8). Must give the numbers of
:class:`dsod.models.layers.L2Norm` (``tests/test_models.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from dsod.models.layers import L2Norm, inverse_norm


class _ScaledL2Normalize(torch.autograd.Function):
    """``y = x / max(||x||, eps) * w`` with the backward of the module docstring.

    Everything runs in ``x``'s dtype (the scale is cast to it, as autocast casts a
    convolution's weight), so a bf16 map stays bf16: with the fp32 scale the output and
    the whole backward were fp32, each multiply mixing dtypes (2-3 times as slow on the
    CPU) and the heads casting the map back. ``dL/dw`` is summed in fp32 at least.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        inverse = inverse_norm(x, eps)
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


class ScaledL2Norm(L2Norm):
    """:class:`~dsod.models.layers.L2Norm` whose backward is :class:`_ScaledL2Normalize`
    when autograd records; without, the plain formula (which exports and compiles as it
    is). ``[B, C, H, W] -> [B, C, H, W]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _ScaledL2Normalize.apply(x, self.weight, self.eps)
        return super().forward(x)
