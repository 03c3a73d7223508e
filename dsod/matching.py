"""Assigning ground-truth boxes to priors (SSD's matching, Liu et al. 2016, Sec. 2.2).

1. Each ground truth takes the prior it overlaps most (bipartite: no two ground truths
   take the same prior, so every ground truth keeps one).
2. Every other prior takes its best-overlapping ground truth if the IoU is at least
   ``match_iou``.
Priors left are background, except those with an IoU in ``[neg_iou, match_iou)`` when
``neg_iou < match_iou``: they are ignored (label ``-1``), neither positive nor negative.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert, box_iou

from dsod.box_coder import BoxCoder

IGNORE = -1


def _force_best_priors(iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Give every ground truth its own best prior.

    Args:
        iou: ``[N, P]`` IoU of ground truths with priors.

    Returns:
        ``(gt_index [M], prior_index [M])`` pairs, ``M <= N``; a ground truth whose best
        IoU is 0 (it overlaps no prior) gets none.
    """
    best_prior = iou.argmax(1)
    if best_prior.unique().numel() == best_prior.numel():  # the common case: no conflict
        keep = iou[torch.arange(iou.shape[0]), best_prior] > 0
        return torch.nonzero(keep).flatten(), best_prior[keep]
    # Greedy bipartite matching: take the largest IoU left, then remove its row and column.
    iou = iou.clone()
    gts, priors = [], []
    num_priors = iou.shape[1]
    for _ in range(iou.shape[0]):
        flat = int(iou.argmax())
        gt, prior = divmod(flat, num_priors)
        if iou[gt, prior] <= 0:
            break
        gts.append(gt)
        priors.append(prior)
        iou[gt, :] = -1
        iou[:, prior] = -1
    as_tensor = lambda v: torch.tensor(v, dtype=torch.long, device=iou.device)  # noqa: E731
    return as_tensor(gts), as_tensor(priors)


def match_priors(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, priors: torch.Tensor,
                 match_iou: float = 0.5, neg_iou: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Match one image's ground truths to the priors.

    Args:
        gt_boxes: ``[N, 4]`` normalised ``xyxy`` ground-truth boxes (``N`` may be 0).
        gt_labels: ``[N]`` int64 labels in ``1..C``.
        priors: ``[P, 4]`` normalised ``cxcywh``.
        match_iou: IoU from which a prior is positive.
        neg_iou: IoU below which an unmatched prior is background.

    Returns:
        ``(matched_boxes [P, 4] xyxy, labels [P])``: each prior's ground-truth box (zeros
        for background) and its label: ``> 0`` positive, ``0`` background, ``-1`` ignored.
    """
    num_priors = priors.shape[0]
    if gt_boxes.numel() == 0:
        return (gt_boxes.new_zeros((num_priors, 4)),
                torch.zeros(num_priors, dtype=torch.long, device=priors.device))
    iou = box_iou(gt_boxes, box_convert(priors, "cxcywh", "xyxy"))  # [N, P]
    best_iou, best_gt = iou.max(0)
    forced_gt, forced_prior = _force_best_priors(iou)
    best_gt[forced_prior] = forced_gt
    best_iou[forced_prior] = 2.0  # above any threshold
    labels = gt_labels[best_gt].clone()
    labels[best_iou < match_iou] = IGNORE
    labels[best_iou < min(neg_iou, match_iou)] = 0
    return gt_boxes[best_gt], labels


class TargetEncoder:
    """Turns one image's ground truth into per-prior training targets.

    Called in data-loader workers, so that the main process only runs the network.
    """

    def __init__(self, priors: torch.Tensor, coder: BoxCoder, match_iou: float = 0.5,
                 neg_iou: float = 0.5) -> None:
        self.priors = priors
        self.coder = coder
        self.match_iou = match_iou
        self.neg_iou = neg_iou

    def __call__(self, boxes: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(boxes [N, 4] normalised xyxy, labels [N])`` -> ``(offsets [P, 4], labels [P])``.

        Offsets of non-positive priors are 0."""
        matched, prior_labels = match_priors(boxes, labels, self.priors, self.match_iou,
                                             self.neg_iou)
        offsets = torch.zeros_like(self.priors)
        positive = prior_labels > 0
        if positive.any():
            offsets[positive] = self.coder.encode(matched[positive], self.priors[positive])
        return offsets, prior_labels
