"""The DSOD backbone: a stem and DenseNet blocks with transitions with and without pooling.

Paper: Shen et al., "DSOD", ICCV 2017, Sec. 3.1 (stem block, transition w/o pooling) and
Table 1 (DS/64-192-48-1). Dense layers follow Huang et al.'s DenseNet-BC; the memory-
efficient mode follows Pleiss et al., "Memory-Efficient Implementation of DenseNets" (2017).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dsod.models.layers import BnReluConv, ConvBnRelu, conv, max_pool, relu_

_recompute_state = threading.local()


@contextlib.contextmanager
def _recomputing() -> Iterator[None]:
    previous = getattr(_recompute_state, "active", False)
    _recompute_state.active = True
    try:
        yield
    finally:
        _recompute_state.active = previous


def _checkpoint_contexts() -> tuple[contextlib.AbstractContextManager,
                                    contextlib.AbstractContextManager]:
    return contextlib.nullcontext(), _recomputing()


@contextlib.contextmanager
def _running_stats_kept(norm: nn.Module) -> Iterator[None]:
    """Restore a BN's running statistics after the block: a recomputed forward must not
    update them a second time. Works for BatchNorm2d and SyncBatchNorm alike."""
    saved = [buffer.clone() for buffer in norm.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(norm.buffers(), saved):
                buffer.copy_(value)


def _normalise(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)``, leaving its running statistics alone when this is a recomputation."""
    if getattr(_recompute_state, "active", False):
        with _running_stats_kept(norm):
            return norm(x)
    return norm(x)


def _recomputed(function: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
    """``function(*inputs)`` with its intermediate results recomputed in the backward pass
    instead of stored (BN statistics are updated once, by the first pass)."""
    if torch.compiler.is_compiling():
        # Compiled, the recomputation is part of the backward graph, which replays values,
        # not the forward's buffer updates; torch.compile refuses a context_fn besides.
        return checkpoint(function, *inputs, use_reentrant=False)
    return checkpoint(function, *inputs, use_reentrant=False, context_fn=_checkpoint_contexts)


class Stem(nn.Module):
    """conv3x3 s2 - conv3x3 - conv3x3 (each conv-BN-ReLU), then a 2x2 ceil max pool.

    ``[B, 3, 300, 300] -> [B, channels[-1], 75, 75]``. With ``memory_efficient`` its
    intermediate maps (the largest of the network, at 150x150) are recomputed in the
    backward pass instead of stored.
    """

    def __init__(self, channels: Sequence[int] = (64, 64, 128), in_channels: int = 3,
                 memory_efficient: bool = False) -> None:
        super().__init__()
        for index, out_channels in enumerate(channels):
            stride = 2 if index == 0 else 1
            self.add_module(f"conv{index + 1}", ConvBnRelu(in_channels, out_channels, 3, stride))
            in_channels = out_channels
        self.add_module("pool", max_pool())
        self.out_channels = in_channels
        self.memory_efficient = memory_efficient

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's computation, without the choice to recompute it."""
        for unit in self.children():
            if isinstance(unit, ConvBnRelu):
                x = relu_(_normalise(unit.norm, unit.conv(x)))
            else:
                x = unit(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_efficient and self.training and torch.is_grad_enabled():
            return _recomputed(self.layers, x)
        return self.layers(x)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck) - BN-ReLU-conv3x3 (growth): one DenseNet-BC layer.

    Takes the list of all earlier feature maps of its block (each ``[B, C_i, H, W]``) and
    returns only its new ``[B, growth_rate, H, W]`` features; the block concatenates.

    With ``memory_efficient`` everything before the 3x3 convolution (concatenation, BNs,
    ReLUs, 1x1 convolution) is recomputed in the backward pass instead of stored, so
    training memory grows linearly with depth instead of quadratically. Outputs and
    gradients are the same.
    """

    def __init__(self, in_channels: int, growth_rate: int, bottleneck_width: int,
                 memory_efficient: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv(in_channels, bottleneck_width, 1)
        self.norm2 = nn.BatchNorm2d(bottleneck_width)
        self.conv2 = conv(bottleneck_width, growth_rate, 3)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        """cat - BN - ReLU - conv1x1 - BN - ReLU: ``[B, sum C_i, H, W] ->
        [B, bottleneck_width, H, W]``, the input of the 3x3 convolution."""
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        x = self.conv1(relu_(_normalise(self.norm1, x)))
        # In place: BN's backward needs its input, not its output.
        return relu_(_normalise(self.norm2, x))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        needs_grad = any(f.requires_grad for f in features)
        if self.memory_efficient and self.training and needs_grad:
            return self.conv2(_recomputed(self.bottleneck, *features))
        return self.conv2(self.bottleneck(*features))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; output is the concatenation of the input and every
    layer's new features: ``[B, C, H, W] -> [B, C + num_layers * growth_rate, H, W]``.

    Without autograd (inference, evaluation) the block writes every layer's features into
    one preallocated output and each layer reads a channel slice of it, as in Pleiss et al.'s
    shared storage: ``L`` copies of ``growth_rate`` channels instead of ``L`` ever-wider
    concatenations. With autograd it concatenates (a buffer written in place would break
    the saved tensors of earlier layers). Under ``torch.compile`` it concatenates too:
    Inductor fuses each concatenation into the BN-ReLU that reads it, so no concatenation is
    stored, whereas it would rewrite the whole shared output at every layer (measured: 6.8
    against 5.7 images/s at batch 8 on a 2-core CPU). All give the same numbers.
    """

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int,
                 bottleneck_width: int, memory_efficient: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck_width,
                       memory_efficient)
            for i in range(num_layers)
        )
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return self._forward_shared(x)
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)

    def _forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                  and not x.is_contiguous() else torch.contiguous_format)
        out = torch.empty((batch, self.out_channels, height, width), dtype=x.dtype,
                          device=x.device, memory_format=layout)
        out[:, :channels] = x
        for layer in self.layers:
            out[:, channels:channels + self.growth_rate] = layer([out[:, :channels]])
            channels += self.growth_rate
        return out


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1, followed by a 2x2 ceil max pool when ``pool`` is true.

    DSOD's "transition w/o pooling" (``pool=False``) deepens the network without shrinking
    the feature map, so more dense blocks can feed the same prediction scale (Sec. 3.1).
    """

    def __init__(self, in_channels: int, out_channels: int, pool: bool) -> None:
        super().__init__()
        self.add_module("unit", BnReluConv(in_channels, out_channels, 1))
        if pool:
            self.add_module("pool", max_pool())
        self.out_channels = out_channels


class DSODBackbone(nn.Module):
    """Stem, then dense blocks 1-4 with the reference's transitions.

    Returns two maps: ``first`` (the output of the transition w/o pooling after block 2,
    the first prediction source, 800 @ 38x38 for DSOD300) and ``last`` (the final
    transition, 256 @ 19x19), which the prediction structure uses.
    """

    def __init__(self, stem_channels: Sequence[int] = (64, 64, 128), growth_rate: int = 48,
                 bottleneck_width: int = 192, block_layers: Sequence[int] = (6, 8, 8, 8),
                 compression: float = 1.0, out_channels: int = 256,
                 memory_efficient: bool = False) -> None:
        super().__init__()
        if len(block_layers) != 4:
            raise ValueError(f"DSOD has 4 dense blocks, got block_layers={list(block_layers)}")

        def block(num_layers: int, in_channels: int) -> DenseBlock:
            return DenseBlock(num_layers, in_channels, growth_rate, bottleneck_width,
                              memory_efficient)

        def compressed(channels: int) -> int:
            return int(channels * compression)

        self.stem = Stem(stem_channels, memory_efficient=memory_efficient)
        self.block1 = block(block_layers[0], self.stem.out_channels)
        self.transition1 = Transition(self.block1.out_channels,
                                      compressed(self.block1.out_channels), pool=True)
        self.block2 = block(block_layers[1], self.transition1.out_channels)
        self.transition2 = Transition(self.block2.out_channels,
                                      compressed(self.block2.out_channels), pool=False)
        self.pool2 = max_pool()
        self.block3 = block(block_layers[2], self.transition2.out_channels)
        self.transition3 = Transition(self.block3.out_channels,
                                      compressed(self.block3.out_channels), pool=False)
        self.block4 = block(block_layers[3], self.transition3.out_channels)
        self.transition4 = Transition(self.block4.out_channels, out_channels, pool=False)
        self.first_channels = self.transition2.out_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.transition1(self.block1(self.stem(x)))
        first = self.transition2(self.block2(x))
        x = self.transition3(self.block3(self.pool2(first)))
        last = self.transition4(self.block4(x))
        return first, last
