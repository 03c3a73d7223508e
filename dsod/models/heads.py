"""Per-source prediction heads: L2Norm, then 3x3 loc and conf convolutions.

The reference follows each convolution with BN (``batch_norm=True``). Without it
(``batch_norm=False``) the convolutions have biases and the class logits start where a
detector starts that has seen nothing yet: background at ``1 - prior_prob`` at every
prior (Lin et al. 2017, "Focal Loss", Sec. 4.1, for a softmax).

Without BN, how fast the heads learn is set by the scale of their input: a 3x3
convolution over L2-normalised features of scale ``s`` sees a patch of squared norm
``9 s^2``, so one SGD step of learning rate ``lr`` moves an output by ``9 s^2 lr`` times
its gradient. :func:`unit_rate_scale` gives the scale that makes that factor 1, whatever
the learning rate (docs/RESULTS.md: the BN heads' start instead hangs on the BN's initial
scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dsod.config.labels import BACKGROUND, without_background
from dsod.models.layers import L2Norm


def unit_rate_scale(lr: float, kernel_size: int = 3) -> float:
    """The L2Norm scale at which one SGD step of ``lr`` moves a head's output by about its
    gradient: ``1 / (kernel_size * sqrt(lr))`` (2.98 for ``lr`` 0.0125)."""
    return 1.0 / (kernel_size * math.sqrt(lr))


class SourceHead(nn.Module):
    """Predictions for one source: ``priors_per_location`` boxes at every position.

    ``[B, C, H, W] -> (logits [B, H*W*k, num_classes], offsets [B, H*W*k, 4])``, priors
    ordered by row, then column, then the k box shapes of a position (see ``dsod.priors``).
    """

    def __init__(
        self,
        in_channels: int,
        priors_per_location: int,
        num_classes: int,
        l2norm_scale: float = 20.0,
        bn_eps: float = 1e-3,
        bn_init_scale: float = 1.0,
        batch_norm: bool = True,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.norm = L2Norm(in_channels, l2norm_scale)
        self.loc = nn.Conv2d(
            in_channels, priors_per_location * 4, 3, padding=1, bias=not batch_norm
        )
        self.conf = nn.Conv2d(
            in_channels, priors_per_location * num_classes, 3, padding=1, bias=not batch_norm
        )
        for layer in (self.loc, self.conf):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        if self.conf.bias is not None and num_classes > 1:
            # Start at p(background) = 1 - prior_prob at every prior (RetinaNet's prior init,
            # for a softmax): bias_bg = log(C * (1 - pi) / pi) for C object classes, others 0.
            background = math.log(without_background(num_classes) * (1 - prior_prob) / prior_prob)
            with torch.no_grad():
                self.conf.bias.view(priors_per_location, num_classes)[:, BACKGROUND] = background
        self.loc_bn: nn.Module = nn.Identity()
        self.conf_bn: nn.Module = nn.Identity()
        if batch_norm:
            self.loc_bn = nn.BatchNorm2d(priors_per_location * 4, eps=bn_eps)
            self.conf_bn = nn.BatchNorm2d(priors_per_location * num_classes, eps=bn_eps)
            for norm in (self.loc_bn, self.conf_bn):
                nn.init.constant_(norm.weight, bn_init_scale)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.norm(x)
        batch = x.shape[0]
        # NCHW -> NHWC so that the k boxes of one position stay together.
        offsets = self.loc_bn(self.loc(x)).permute(0, 2, 3, 1).reshape(batch, -1, 4)
        logits = (
            self.conf_bn(self.conf(x)).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes)
        )
        return logits, offsets


class PredictionHeads(nn.Module):
    """One :class:`SourceHead` per source; outputs concatenated over all priors.

    Returns ``(logits [B, P, num_classes], offsets [B, P, 4])`` with ``P`` the total number
    of priors, in the order of ``dsod.priors.PriorGenerator``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        priors_per_location: Sequence[int],
        num_classes: int,
        l2norm_scale: float = 20.0,
        bn_eps: float = 1e-3,
        bn_init_scale: float = 1.0,
        batch_norm: bool = True,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(priors_per_location):
            raise ValueError(
                f"{len(in_channels)} sources but {len(priors_per_location)} prior counts"
            )
        self.heads = nn.ModuleList(
            SourceHead(
                c, k, num_classes, l2norm_scale, bn_eps, bn_init_scale, batch_norm, prior_prob
            )
            for c, k in zip(in_channels, priors_per_location)
        )

    def forward(self, sources: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [head(source) for head, source in zip(self.heads, sources)]
        logits = torch.cat([o[0] for o in outputs], 1)
        offsets = torch.cat([o[1] for o in outputs], 1)
        return logits, offsets
