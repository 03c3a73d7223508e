"""Centre-size box encoding against priors, with SSD's variances.

For a box ``(x1, y1, x2, y2)`` and a prior ``(pcx, pcy, pw, ph)``, both normalised:

    tx = (cx - pcx) / (pw * v0)        tw = log(w / pw) / v2
    ty = (cy - pcy) / (ph * v1)        th = log(h / ph) / v3

The variances ``v = [0.1, 0.1, 0.2, 0.2]`` live here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Largest log-scale a decoded box may take: keeps exp() finite for wild early predictions.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes ``xyxy`` boxes as offsets from priors (``cxcywh``), and back."""

    def __init__(self, variances: Sequence[float] = (0.1, 0.1, 0.2, 0.2)) -> None:
        if len(variances) != 4:
            raise ValueError(f"variances must have 4 values, got {list(variances)}")
        self.variances = tuple(float(v) for v in variances)

    def encode(self, boxes: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """Offsets of ``boxes`` from ``priors``.

        Args:
            boxes: ``[..., P, 4]`` ``xyxy`` with positive width and height.
            priors: ``[P, 4]`` ``cxcywh``, same units as ``boxes``.

        Returns:
            ``[..., P, 4]`` offsets ``(tx, ty, tw, th)``.
        """
        v0, v1, v2, v3 = self.variances
        wh = boxes[..., 2:] - boxes[..., :2]
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2
        t_xy = (centre - priors[:, :2]) / priors[:, 2:] / centre.new_tensor([v0, v1])
        t_wh = torch.log(wh / priors[:, 2:]) / wh.new_tensor([v2, v3])
        return torch.cat([t_xy, t_wh], -1)

    def decode(self, offsets: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """Boxes from offsets: the inverse of :meth:`encode`.

        Args:
            offsets: ``[..., P, 4]`` ``(tx, ty, tw, th)``.
            priors: ``[P, 4]`` ``cxcywh``.

        Returns:
            ``[..., P, 4]`` ``xyxy`` in the priors' units (log-scales above
            ``log(1000/16)`` are clamped so that the result stays finite).
        """
        v0, v1, v2, v3 = self.variances
        centre = priors[:, :2] + offsets[..., :2] * offsets.new_tensor([v0, v1]) * priors[:, 2:]
        log_scale = (offsets[..., 2:] * offsets.new_tensor([v2, v3])).clamp(max=_MAX_LOG_SCALE)
        half = priors[:, 2:] * torch.exp(log_scale) / 2
        return torch.cat([centre - half, centre + half], -1)
