"""The paper's from-scratch baseline: torchvision's SSD300 VGG16 behind DSOD's interface.

``torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None,
num_classes=C)`` is built as torchvision builds it (VGG16 with ``ceil_mode`` pool3, pool5 as
3x3 stride 1, atrous fc6, fc7, the four extra blocks, the L2-normalised conv4_3 with its
learned scale initialised to 20, and the :class:`SSDHead` of 3x3 convolutions), and only its
``backbone`` and ``head`` are kept. Its ``GeneralizedRCNNTransform`` (resizing, RGB
normalisation), ``DefaultBoxGenerator`` and loss are bypassed: this package's priors,
matching, MultiBox loss, augmentation and post-processing are used instead, so the baseline
differs from DSOD only in the network.

Input convention: like DSOD, ``[B, 3, S, S]`` BGR minus the mean BGR, in 0..255 units.
torchvision's own transform feeds RGB 0..255 minus its mean (``image_std`` is ``1/255``),
the same scale; the channel order does not matter for a network trained from scratch.

Prediction order: torchvision's ``SSDScoringHead`` reshapes each map's ``[N, A*K, H, W]`` to
``[N, A, K, H, W]``, permutes to ``[N, H, W, A, K]`` and flattens, i.e. rows, then columns,
then the ``A`` boxes of a position, which is the order of :mod:`dsod.models.heads` and
:class:`dsod.priors.PriorGenerator`. Its anchors per position are ``[4, 6, 6, 6, 4, 4]``
(ratios ``[2], [2, 3], [2, 3], [2, 3], [2], [2]`` with flips and two squares), the same as
the SSD300 prior config; the order of the shapes *within* a position differs from
torchvision's anchor generator, which is irrelevant here since the box slots are trained
against this package's priors from scratch.

Feature maps at 300x300: 38, 19, 10, 5, 3, 1 (8,732 priors). The network needs an input of
at least 268 pixels (the last two extra blocks are unpadded 3x3 convolutions).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection import ssd300_vgg16

SSD300_PRIORS_PER_LOCATION: tuple[int, ...] = (4, 6, 6, 6, 4, 4)


def _torchvision_ssd300(num_classes: int, device: str | torch.device | None = None) -> nn.Module:
    """torchvision's SSD300 VGG16, randomly initialised (no pretrained weights at all)."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        return ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)


@functools.cache
def _feature_sizes(input_size: int) -> tuple[int, ...]:
    model = _torchvision_ssd300(2, device="meta")
    image = torch.empty(1, 3, input_size, input_size, device="meta")
    try:
        sources = model.backbone(image)
    except RuntimeError as error:
        raise ValueError(
            f"SSD300 VGG16 cannot run on a {input_size}x{input_size} input (the "
            f"network needs at least 268 pixels): {error}"
        ) from None
    sizes = []
    for source in sources.values():
        height, width = source.shape[-2:]
        if height != width or height < 1:
            raise ValueError(
                f"SSD300 VGG16 on a {input_size}x{input_size} input gives a "
                f"{height}x{width} source; the priors need square maps"
            )
        sizes.append(int(height))
    return tuple(sizes)


def ssd_vgg_feature_sizes(input_size: int) -> list[int]:
    """Side of each of the six source maps for a square ``input_size`` input.

    Derived once per size by a forward pass of torchvision's backbone on the meta device (no
    memory, no arithmetic) and cached; 300 gives ``[38, 19, 10, 5, 3, 1]``.

    Raises:
        ValueError: the input is too small for the network (under 268 pixels).
    """
    return list(_feature_sizes(int(input_size)))


class SSDVGG16(nn.Module):
    """torchvision's SSD300 VGG16 network with DSOD's contract.

    ``forward(images [B, 3, S, S])`` returns ``(logits [B, P, num_classes], offsets
    [B, P, 4])`` in the order of :class:`dsod.priors.PriorGenerator`; class 0 is background.
    ``features(images)`` gives the six source maps and ``heads(sources)`` the predictions.

    Args:
        num_classes: classes including background.
        priors_per_location: priors per position of each source; must be torchvision's
            ``[4, 6, 6, 6, 4, 4]`` (the head is torchvision's, built for those).
    """

    def __init__(
        self, num_classes: int, priors_per_location: Sequence[int] = SSD300_PRIORS_PER_LOCATION
    ) -> None:
        super().__init__()
        expected = list(SSD300_PRIORS_PER_LOCATION)
        if list(priors_per_location) != expected:
            raise ValueError(
                f"ssd300_vgg16's head predicts {expected} boxes per position, "
                f"but the priors have {list(priors_per_location)}; use aspect "
                f"ratios [[2], [2, 3], [2, 3], [2, 3], [2], [2]]"
            )
        network = _torchvision_ssd300(num_classes)
        anchors = list(network.anchor_generator.num_anchors_per_location())
        if anchors != expected:  # torchvision changed its SSD300: the head no longer fits
            raise RuntimeError(
                f"torchvision's ssd300_vgg16 now has {anchors} anchors per "
                f"position, expected {expected}"
            )
        self.num_classes = num_classes
        self.backbone = network.backbone  # SSDFeatureExtractorVGG: VGG16 + extras
        self.head = network.head  # SSDHead: classification and regression convolutions

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The six source maps ``[B, C_k, H_k, W_k]`` (conv4_3 L2-normalised and scaled,
        fc7, conv8_2 .. conv11_2)."""
        return list(self.backbone(images).values())

    def heads(self, sources: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, P, num_classes], offsets [B, P, 4])`` from the six sources."""
        out = self.head(list(sources))
        return out["cls_logits"], out["bbox_regression"]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(images))
