"""Multi-scale prediction structures: DSOD's dense one and the plain (SSD-style) one.

Paper Sec. 3.1, "Dense Prediction Structure" and Fig. 1: at each scale after the first,
half of the channels are *learned* from the previous scale (BN-ReLU-conv1x1 then a
stride-2 BN-ReLU-conv3x3) and half are *reused*: the previous scale max-pooled and
compressed by a BN-ReLU-conv1x1. The plain structure keeps only the learned half.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dsod.models.layers import BnReluConv, max_pool


class LearningHalf(nn.Sequential):
    """BN-ReLU-conv1x1 (n) - BN-ReLU-conv3x3 s2 (n):
    ``[B, C, H, W] -> [B, n, ceil(H/2), ceil(W/2)]``."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.add_module("reduce", BnReluConv(in_channels, width, 1))
        self.add_module("down", BnReluConv(width, width, 3, stride=2))


class ReusingHalf(nn.Sequential):
    """2x2 ceil max pool - BN-ReLU-conv1x1 (n):
    ``[B, C, H, W] -> [B, n, ceil(H/2), ceil(W/2)]``."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.add_module("pool", max_pool())
        self.add_module("reduce", BnReluConv(in_channels, width, 1))


class DensePrediction(nn.Module):
    """DSOD's "learning half, reusing half" structure.

    Args:
        first_channels: channels of First (800 for DSOD300).
        last_channels: channels of the backbone's last transition (256).
        widths: ``widths[0]`` is the reused half of Second; ``widths[k]`` for ``k >= 1`` is
            ``n`` of source ``k + 2`` (both halves ``n``, so that source has ``2n`` channels).

    ``forward(first, last)`` returns the list of sources, First first.
    """

    def __init__(self, first_channels: int, last_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        self.second_reused = ReusingHalf(first_channels, widths[0])
        channels = [first_channels, last_channels + widths[0]]
        self.learned = nn.ModuleList()
        self.reused = nn.ModuleList()
        for width in widths[1:]:
            self.learned.append(LearningHalf(channels[-1], width))
            self.reused.append(ReusingHalf(channels[-1], width))
            channels.append(2 * width)
        self.out_channels = channels

    def forward(self, first: torch.Tensor, last: torch.Tensor) -> list[torch.Tensor]:
        sources = [first, torch.cat([last, self.second_reused(first)], 1)]
        for learned, reused in zip(self.learned, self.reused):
            previous = sources[-1]
            # Order as in the reference's concat: reused (pooled) half first, learned second.
            sources.append(torch.cat([reused(previous), learned(previous)], 1))
        return sources


class PlainPrediction(nn.Module):
    """SSD-style structure for the paper's ablation: each scale is only learned from the
    previous one. Second is the backbone's last transition; ``widths[0]`` is unused (kept
    so that both structures read the same config)."""

    def __init__(self, first_channels: int, last_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        channels = [first_channels, last_channels]
        self.learned = nn.ModuleList()
        for width in widths[1:]:
            self.learned.append(LearningHalf(channels[-1], width))
            channels.append(width)
        self.out_channels = channels

    def forward(self, first: torch.Tensor, last: torch.Tensor) -> list[torch.Tensor]:
        sources = [first, last]
        for learned in self.learned:
            sources.append(learned(sources[-1]))
        return sources
