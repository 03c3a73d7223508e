"""The DSOD backbone: a stem and DenseNet blocks with transitions with and without pooling.

Paper: Shen et al., "DSOD", ICCV 2017, Sec. 3.1 (stem block, transition w/o pooling) and
Table 1 (DS/64-192-48-1). Dense layers follow Huang et al.'s DenseNet-BC. The memory-
efficient dense layers and stem (Pleiss et al.) and the shared-buffer block for inference
are in :mod:`dsod.runtime`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dsod.models.layers import BnReluConv, ConvBnRelu, conv, max_pool


class Stem(nn.Sequential):
    """conv3x3 s2 - conv3x3 - conv3x3 (each conv-BN-ReLU), then a 2x2 ceil max pool.

    ``[B, 3, 300, 300] -> [B, channels[-1], 75, 75]``.
    """

    def __init__(self, channels: Sequence[int] = (64, 64, 128), in_channels: int = 3) -> None:
        super().__init__()
        for index, out_channels in enumerate(channels):
            stride = 2 if index == 0 else 1
            self.add_module(f"conv{index + 1}", ConvBnRelu(in_channels, out_channels, 3, stride))
            in_channels = out_channels
        self.add_module("pool", max_pool())
        self.out_channels = in_channels


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck) - BN-ReLU-conv3x3 (growth): one DenseNet-BC layer.

    Takes the list of all earlier feature maps of its block (each ``[B, C_i, H, W]``) and
    returns only its new ``[B, growth_rate, H, W]`` features; the block concatenates.
    """

    def __init__(self, in_channels: int, growth_rate: int, bottleneck_width: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = conv(in_channels, bottleneck_width, 1)
        self.norm2 = nn.BatchNorm2d(bottleneck_width)
        # In place: BN's backward needs its input, not its output.
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = conv(bottleneck_width, growth_rate, 3)

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        """cat - BN - ReLU - conv1x1 - BN - ReLU: ``[B, sum C_i, H, W] ->
        [B, bottleneck_width, H, W]``, the input of the 3x3 convolution."""
        x = torch.cat(features, 1) if len(features) > 1 else features[0]
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.relu2(self.norm2(x))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv2(self.bottleneck(*features))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; output is the concatenation of the input and every
    layer's new features: ``[B, C, H, W] -> [B, C + num_layers * growth_rate, H, W]``.
    """

    def __init__(
        self, num_layers: int, in_channels: int, growth_rate: int, bottleneck_width: int
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck_width)
            for i in range(num_layers)
        )
        self.in_channels = in_channels
        self.growth_rate = growth_rate
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


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

    def __init__(
        self,
        stem_channels: Sequence[int] = (64, 64, 128),
        growth_rate: int = 48,
        bottleneck_width: int = 192,
        block_layers: Sequence[int] = (6, 8, 8, 8),
        compression: float = 1.0,
        out_channels: int = 256,
    ) -> None:
        super().__init__()
        if len(block_layers) != 4:
            raise ValueError(f"DSOD has 4 dense blocks, got block_layers={list(block_layers)}")

        def block(num_layers: int, in_channels: int) -> DenseBlock:
            return DenseBlock(num_layers, in_channels, growth_rate, bottleneck_width)

        def compressed(channels: int) -> int:
            return int(channels * compression)

        self.stem = Stem(stem_channels)
        self.block1 = block(block_layers[0], self.stem.out_channels)
        self.transition1 = Transition(
            self.block1.out_channels, compressed(self.block1.out_channels), pool=True
        )
        self.block2 = block(block_layers[1], self.transition1.out_channels)
        self.transition2 = Transition(
            self.block2.out_channels, compressed(self.block2.out_channels), pool=False
        )
        self.pool2 = max_pool()
        self.block3 = block(block_layers[2], self.transition2.out_channels)
        self.transition3 = Transition(
            self.block3.out_channels, compressed(self.block3.out_channels), pool=False
        )
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
