"""Assigning ground-truth boxes to priors (SSD's matching, Liu et al. 2016, Sec. 2.2).

1. Each ground truth takes the prior it overlaps most (bipartite: no two ground truths
   take the same prior, so every ground truth keeps one).
2. Every other prior takes its best-overlapping ground truth if the IoU is at least
   ``match_iou``.
Priors left are background, except those with an IoU in ``[neg_iou, match_iou)`` when
``neg_iou < match_iou``: they are ignored (label ``-1``), neither positive nor negative.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_convert

from dsod.box_coder import BoxCoder

IGNORE = -1


def _iou(boxes: np.ndarray, priors_xyxy: np.ndarray, prior_areas: np.ndarray) -> np.ndarray:
    """``[N, 4]`` x ``[P, 4]`` xyxy -> ``[N, P]`` IoU: :func:`dsod.box_ops.box_iou` with
    the priors' areas given, laid out for the matcher's hot path (numpy: these arrays are
    small, and this runs once per training sample in the loader workers). ``priors_xyxy``
    is best column-major (``np.asfortranarray``): each coordinate is then one contiguous
    row."""
    iw = np.minimum(boxes[:, 2:3], priors_xyxy[:, 2])
    iw -= np.maximum(boxes[:, 0:1], priors_xyxy[:, 0])
    np.maximum(iw, 0, out=iw)
    ih = np.minimum(boxes[:, 3:4], priors_xyxy[:, 3])
    ih -= np.maximum(boxes[:, 1:2], priors_xyxy[:, 1])
    np.maximum(ih, 0, out=ih)
    inter = np.multiply(iw, ih, out=iw)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = areas[:, None] + prior_areas
    union -= inter
    return np.divide(inter, union, out=inter)


def _force_best_priors(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give every ground truth its own best prior.

    Args:
        iou: ``[N, P]`` IoU of ground truths with priors.

    Returns:
        ``(gt_index [M], prior_index [M])`` pairs, ``M <= N``; a ground truth whose best
        IoU is 0 (it overlaps no prior) gets none.
    """
    best_prior = iou.argmax(1)
    if np.unique(best_prior).size == best_prior.size:  # the common case: no conflict
        keep = np.flatnonzero(iou[np.arange(iou.shape[0]), best_prior] > 0)
        return keep, best_prior[keep]
    # Greedy bipartite matching: take the largest IoU left, then remove its row and column.
    iou = iou.copy()
    gts, priors = [], []
    for _ in range(iou.shape[0]):
        gt, prior = np.unravel_index(int(iou.argmax()), iou.shape)
        if iou[gt, prior] <= 0:
            break
        gts.append(gt)
        priors.append(prior)
        iou[gt, :] = -1
        iou[:, prior] = -1
    return np.array(gts, dtype=np.int64), np.array(priors, dtype=np.int64)


def _match(
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    priors_xyxy: np.ndarray,
    prior_areas: np.ndarray,
    match_iou: float,
    neg_iou: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's ground truths to the priors.

    Args:
        gt_boxes: ``[N, 4]`` normalised ``xyxy`` ground-truth boxes (``N`` may be 0).
        gt_labels: ``[N]`` int64 labels in ``1..C``.
        priors_xyxy, prior_areas: ``[P, 4]`` normalised ``xyxy`` priors and their ``[P]``
            areas.
        match_iou: IoU from which a prior is positive.
        neg_iou: IoU below which an unmatched prior is background.

    Returns:
        ``(matched_boxes [P, 4] xyxy, labels [P])``: each prior's best ground-truth box
        (meaningful for positives only) and its label: ``> 0`` positive, ``0`` background,
        ``-1`` ignored.
    """
    num_priors = priors_xyxy.shape[0]
    if gt_boxes.shape[0] == 0:
        return np.zeros((num_priors, 4), np.float32), np.zeros(num_priors, np.int64)
    iou = _iou(gt_boxes, priors_xyxy, prior_areas)
    best_gt = iou.argmax(0)
    best_iou = iou[best_gt, np.arange(num_priors)]
    forced_gt, forced_prior = _force_best_priors(iou)
    best_gt[forced_prior] = forced_gt
    best_iou[forced_prior] = 2.0  # above any threshold
    labels = gt_labels[best_gt].astype(np.int64)
    labels[best_iou < match_iou] = IGNORE
    labels[best_iou < min(neg_iou, match_iou)] = 0
    return gt_boxes[best_gt], labels


class TargetEncoder:
    """Turns one image's ground truth into per-prior training targets, matched as the
    module docstring says: a prior is positive from ``match_iou``, background below
    ``neg_iou`` (ignored in between when ``neg_iou < match_iou``).

    Called in data-loader workers, so that the main process only runs the network.
    """

    def __init__(
        self, priors: torch.Tensor, coder: BoxCoder, match_iou: float = 0.5, neg_iou: float = 0.5
    ) -> None:
        self.priors = priors
        self._priors_xyxy = np.asfortranarray(box_convert(priors, "cxcywh", "xyxy").numpy())
        self._prior_areas = (priors[:, 2] * priors[:, 3]).numpy()
        self.coder = coder
        self.match_iou = match_iou
        self.neg_iou = neg_iou

    def __call__(
        self, boxes: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(boxes [N, 4] normalised xyxy, labels [N])`` -> ``(offsets [P, 4], labels [P])``.

        Offsets of non-positive priors are 0."""
        matched, prior_labels = _match(
            boxes.numpy().reshape(-1, 4),
            labels.numpy(),
            self._priors_xyxy,
            self._prior_areas,
            self.match_iou,
            self.neg_iou,
        )
        offsets = torch.zeros_like(self.priors)
        positive = np.flatnonzero(prior_labels > 0)
        if positive.size:
            index = torch.from_numpy(positive)
            offsets[index] = self.coder.encode(
                torch.from_numpy(matched[positive]), self.priors[index]
            )
        return offsets, torch.from_numpy(prior_labels)
