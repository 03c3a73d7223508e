"""Side by side: DSOD300's L2Norm run in the input's dtype (``dsod.runtime.l2norm``: the
scale cast to bf16 under autocast) against its earlier form, whose fp32 scale promoted the
bf16 map to fp32 (output and backward), switched in the network as
``dsod.runtime.speed_paths`` switches modules, in one process, the two alternated: a bf16
training step at batch 8 and bf16 inference at batch 1 and 8 (CPU).
Run from the repository root: ``python benchmarks/ab/l2norm_dtype.py``."""

from typing import Any

import torch
from swap_harness import bf16_training_and_inference

from dsod.models.layers import L2Norm, inverse_norm
from dsod.runtime.l2norm import ScaledL2Norm
from dsod.runtime.speed_paths import switch


class _Promoting(torch.autograd.Function):
    """The earlier form: the fp32 scale multiplies the bf16 map (fp32 out, fp32 backward)."""

    @staticmethod
    def forward(ctx: Any, x, weight, eps):
        inverse = inverse_norm(x, eps)
        normalised = x * inverse
        ctx.save_for_backward(normalised, inverse, weight)
        return normalised * weight.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx: Any, grad):
        normalised, inverse, weight = ctx.saved_tensors
        grad_weight = (grad * normalised).sum((0, 2, 3))
        grad_normalised = grad * weight.view(1, -1, 1, 1)
        along = (grad_normalised * normalised).sum(1, keepdim=True)
        grad_x = torch.addcmul(grad_normalised, normalised, along, value=-1).mul_(inverse)
        return grad_x, grad_weight, None


class PromotingL2Norm(L2Norm):
    def forward(self, x):
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _Promoting.apply(x, self.weight, self.eps)
        return x * inverse_norm(x, self.eps) * self.weight.view(1, -1, 1, 1)


bf16_training_and_inference(
    {
        "fp32 scale": lambda net: switch(
            net, {L2Norm: PromotingL2Norm, ScaledL2Norm: PromotingL2Norm}
        ),
        "input dtype": lambda net: switch(net, {PromotingL2Norm: ScaledL2Norm}),
    }
)
