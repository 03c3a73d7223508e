"""The DSOD detector: backbone, prediction structure and heads."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dsod.models.densenet import DSODBackbone
from dsod.models.heads import PredictionHeads
from dsod.models.prediction import DensePrediction, PlainPrediction


class DSOD(nn.Module):
    """DSOD (Shen et al., ICCV 2017): images in, raw per-prior predictions out.

    Input: ``[B, 3, S, S]`` float, BGR with the mean subtracted (see ``dsod.data``).
    Output: ``(logits [B, P, num_classes], offsets [B, P, 4])``; class 0 is background,
    offsets are encoded against the priors by ``dsod.box_coder.BoxCoder``. Loss and
    post-processing are separate objects.
    """

    def __init__(
        self,
        num_classes: int,
        priors_per_location: Sequence[int],
        stem_channels: Sequence[int] = (64, 64, 128),
        growth_rate: int = 48,
        bottleneck_width: int = 192,
        block_layers: Sequence[int] = (6, 8, 8, 8),
        compression: float = 1.0,
        backbone_out_channels: int = 256,
        prediction: str = "dense",
        extra_widths: Sequence[int] = (256, 256, 128, 128, 128),
        l2norm_scale: float = 20.0,
        head_bn_eps: float = 1e-3,
        head_bn_init_scale: float = 1.0,
        head_bn: bool = True,
        head_prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if len(priors_per_location) != len(extra_widths) + 1:
            raise ValueError(
                f"{len(extra_widths) + 1} sources but {len(priors_per_location)} prior counts"
            )
        self.num_classes = num_classes
        self.backbone = DSODBackbone(
            stem_channels,
            growth_rate,
            bottleneck_width,
            block_layers,
            compression,
            backbone_out_channels,
        )
        structures = {"dense": DensePrediction, "plain": PlainPrediction}
        if prediction not in structures:
            raise ValueError(f"prediction must be 'dense' or 'plain', got {prediction!r}")
        self.prediction = structures[prediction](
            self.backbone.first_channels, self.backbone.out_channels, extra_widths
        )
        self.heads = PredictionHeads(
            self.prediction.out_channels,
            priors_per_location,
            num_classes,
            l2norm_scale,
            head_bn_eps,
            head_bn_init_scale,
            head_bn,
            head_prior_prob,
        )

    @staticmethod
    def feature_sizes(input_size: int, num_sources: int = 6) -> list[int]:
        """Side of each source's feature map for a square input.

        Every downsampling (stride-2 conv with pad 1, or 2x2 ceil pool) maps ``n`` to
        ``ceil(n / 2)``; First comes after three of them, each later source after one more.
        300 gives ``[38, 19, 10, 5, 3, 2]``.
        """
        sizes, size = [], input_size
        for _ in range(3):
            size = math.ceil(size / 2)
        for _ in range(num_sources):
            sizes.append(size)
            size = math.ceil(size / 2)
        return sizes

    def forward_sources(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The six prediction sources, each ``[B, C_k, H_k, W_k]``."""
        first, last = self.backbone(images)
        return self.prediction(first, last)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.forward_sources(images))


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
