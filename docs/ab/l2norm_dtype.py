"""Side by side: DSOD300's L2Norm run in the input's dtype (``dsod.models.layers``: the
scale cast to bf16 under autocast) against its earlier form, whose fp32 scale promoted the
bf16 map to fp32 (output and backward), in one process, the two alternated: a bf16
training step at batch 8 and bf16 inference at batch 1 and 8 (CPU).
Run from the repository root: ``python docs/ab/l2norm_dtype.py``."""
import statistics
import time
from typing import Any

import torch

from dsod.benchmarks.models import TrainingStep, prepare_model, random_images
from dsod.config import load_config
from dsod.engine.host_memory import reuse_freed_memory
from dsod.models import layers

reuse_freed_memory()


class _Promoting(torch.autograd.Function):
    """The earlier form: the fp32 scale multiplies the bf16 map (fp32 out, fp32 backward)."""

    @staticmethod
    def forward(ctx: Any, x, weight, eps):
        inverse = layers._inverse_norm(x, eps)
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


def promoting_forward(self, x):
    if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
        return _Promoting.apply(x, self.weight, self.eps)
    return x * layers._inverse_norm(x, self.eps) * self.weight.view(1, -1, 1, 1)


VARIANTS = {"fp32 scale": promoting_forward, "input dtype": layers.L2Norm.forward}


def side_by_side(name, run, rounds):
    times = {label: [] for label in VARIANTS}
    for _ in range(rounds):
        for label, forward in VARIANTS.items():
            layers.L2Norm.forward = forward
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    a, b = (statistics.median(times[k]) for k in VARIANTS)
    print(f"{name}: fp32 scale {a * 1e3:.1f} ms, input dtype {b * 1e3:.1f} ms, "
          f"ratio {b / a:.3f}", flush=True)


config = load_config("configs/dsod300_voc.yaml", ["model.memory_efficient=false"])
step = TrainingStep(config, torch.device("cpu"), 8, "bf16", True)
for forward in VARIANTS.values():
    layers.L2Norm.forward = forward
    step()
side_by_side("bf16 training step, batch 8", step, 5)
model = prepare_model(config, torch.device("cpu"), True, for_inference=True, precision="bf16")
for batch, rounds in ((1, 9), (8, 5)):
    images = random_images(batch, 300, torch.device("cpu"), True)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        for forward in VARIANTS.values():
            layers.L2Norm.forward = forward
            model(images)
        side_by_side(f"bf16 inference, batch {batch}", lambda: model(images), rounds)
