"""Recomputation: the paper's dense layers and stem with their intermediate maps
recomputed in the backward pass instead of stored (Pleiss et al., "Memory-Efficient
Implementation of DenseNets", 2017).

A dense layer stores its concatenation, BNs, ReLUs and 1x1 convolution for the backward
pass, so training memory grows quadratically with depth; recomputed, it grows linearly.
The stem's 150x150 maps are the largest of the network. DSOD300 then trains in 0.43 of the
peak memory for 0.95 to 1.24 times the step time on a CPU, and 0.375 of the memory for
1.37 times at batch 64 on an H200 (docs/PERFORMANCE.md). The recomputation must not update
the BN running statistics a second time: they are put back as the first pass left them.
Outputs, gradients and statistics must be those of the plain layers
(``tests/test_models.py``, ``tests/test_speed_paths.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsod.models.densenet import DenseLayer, Stem


@contextlib.contextmanager
def _running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Put the BN running statistics under ``module`` back as they were on entry (for
    BatchNorm2d and SyncBatchNorm alike)."""
    buffers = [
        buffer
        for norm in module.modules()
        if isinstance(norm, nn.modules.batchnorm._NormBase)
        for buffer in norm.buffers()
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


def recomputed(
    function: Callable[..., torch.Tensor], module: nn.Module, *inputs: torch.Tensor
) -> torch.Tensor:
    """``function(*inputs)`` with its intermediate results recomputed in the backward pass
    instead of stored; the recomputation leaves the BN statistics of ``module`` (the
    owner of ``function``) as the first pass updated them."""
    if torch.compiler.is_compiling():
        # Compiled, the recomputation is part of the backward graph, which replays values,
        # not the forward's buffer updates; torch.compile refuses a context_fn besides.
        return checkpoint(function, *inputs, use_reentrant=False)
    return checkpoint(
        function,
        *inputs,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _running_stats_kept(module)),
    )


class RecomputedDenseLayer(DenseLayer):
    """:class:`~dsod.models.densenet.DenseLayer` whose bottleneck (concatenation, BNs,
    ReLUs, 1x1 convolution) is recomputed in the backward pass while training with
    autograd. Same interface: the block's earlier maps in, ``[B, growth_rate, H, W]`` out."""

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.training and any(f.requires_grad for f in features):
            return self.conv2(recomputed(self.bottleneck, self, *features))
        return super().forward(features)


class RecomputedStem(Stem):
    """:class:`~dsod.models.densenet.Stem` recomputed in the backward pass while training
    with autograd. ``[B, 3, H, W] -> [B, C, H / 4, W / 4]`` (ceil) as the stem."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return recomputed(super().forward, self, x)
        return super().forward(x)
