"""SSD's MultiBox loss with hard negative mining (Liu et al. 2016, Sec. 2.2, "Training")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiBoxLoss(nn.Module):
    """Smooth-L1 on positive priors' offsets plus softmax cross-entropy on positives and
    the hardest negatives, both divided by the number of positive priors.

    Negatives are chosen per image by their confidence loss, at most ``neg_pos_ratio``
    times that image's positives (an image without objects contributes no negatives,
    as in the reference). Priors labelled ``-1`` are ignored entirely.
    """

    def __init__(self, neg_pos_ratio: float = 3.0, loc_weight: float = 1.0) -> None:
        super().__init__()
        self.neg_pos_ratio = neg_pos_ratio
        self.loc_weight = loc_weight

    def forward(
        self,
        logits: torch.Tensor,
        offsets: torch.Tensor,
        target_offsets: torch.Tensor,
        target_labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            logits: ``[B, P, C+1]`` raw class scores.
            offsets: ``[B, P, 4]`` predicted box offsets.
            target_offsets: ``[B, P, 4]`` encoded ground truth (used where positive).
            target_labels: ``[B, P]`` int64: ``> 0`` positive, ``0`` background, ``-1`` ignored.

        Returns:
            ``{"loss", "loc_loss", "conf_loss"}`` scalars (already normalised) and
            ``"num_pos"``; all finite, also when the batch has no objects.
        """
        logits = logits.float()
        positive = target_labels > 0
        num_pos_per_image = positive.sum(1)
        num_pos = num_pos_per_image.sum()
        ce = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            target_labels.clamp(min=0).reshape(-1),
            reduction="none",
        ).view_as(target_labels)
        with torch.no_grad():
            mining = ce.clone()
            mining[target_labels != 0] = -1.0  # only background priors can be negatives
            order = mining.argsort(1, descending=True)
            rank = order.argsort(1)
            num_candidates = (target_labels == 0).sum(1)
            num_neg = torch.minimum(
                (self.neg_pos_ratio * num_pos_per_image).long(), num_candidates
            )
            negative = rank < num_neg.unsqueeze(1)
        normaliser = num_pos.clamp(min=1).float()
        conf_loss = ce[positive | negative].sum() / normaliser
        loc_loss = (
            F.smooth_l1_loss(
                offsets.float()[positive], target_offsets.float()[positive], reduction="sum"
            )
            / normaliser
        )
        loss = conf_loss + self.loc_weight * loc_loss
        return {"loss": loss, "loc_loss": loc_loss, "conf_loss": conf_loss, "num_pos": num_pos}
