"""From raw per-prior outputs to detections: decode, per-class NMS, keep the best."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

from dsod.box_coder import BoxCoder
from dsod.structures import Detections


class PostProcessor:
    """SSD's DetectionOutput: softmax, decode, score threshold, top-k per class, per-class
    NMS, keep the best per image. Vectorised over the batch: one NMS call for all images.

    Args:
        priors: ``[P, 4]`` normalised ``cxcywh``.
        coder: the box coder the model was trained with.
        conf_threshold: minimum class probability kept (0.01).
        nms_iou: IoU above which a lower-scored box of the same class is suppressed (0.45).
        top_k: candidates per class and image before NMS (400).
        keep_top_k: detections per image after NMS (200).
    """

    def __init__(
        self,
        priors: torch.Tensor,
        coder: BoxCoder,
        conf_threshold: float = 0.01,
        nms_iou: float = 0.45,
        top_k: int = 400,
        keep_top_k: int = 200,
    ) -> None:
        self.priors = priors
        self.coder = coder
        self.conf_threshold = conf_threshold
        self.nms_iou = nms_iou
        self.top_k = top_k
        self.keep_top_k = keep_top_k

    @torch.no_grad()
    def __call__(
        self, logits: torch.Tensor, offsets: torch.Tensor, image_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        """
        Args:
            logits: ``[B, P, C+1]`` raw class scores (class 0 is background).
            offsets: ``[B, P, 4]`` box offsets.
            image_sizes: ``(width, height)`` of each original image, in pixels.

        Returns:
            One :class:`Detections` per image: absolute ``xyxy`` boxes in that image's
            pixels (clipped to it), scores, labels in ``1..C``, best first.
        """
        batch, num_priors, num_classes = logits.shape
        scores = logits.float().softmax(-1)[..., 1:]  # [B, P, C]
        boxes = self.coder.decode(offsets.float(), self.priors.to(offsets.device).float())
        scale = torch.tensor(
            [[w, h, w, h] for w, h in image_sizes], dtype=boxes.dtype, device=boxes.device
        )
        boxes = boxes * scale[:, None, :]
        boxes = torch.minimum(boxes.clamp(min=0), scale[:, None, :])

        k = min(self.top_k, num_priors)
        top_scores, top_priors = scores.transpose(1, 2).topk(k, dim=2)  # [B, C, k]
        keep = top_scores > self.conf_threshold
        image_index, class_index, slot = torch.nonzero(keep, as_tuple=True)
        prior_index = top_priors[image_index, class_index, slot]
        cand_scores = top_scores[image_index, class_index, slot]
        cand_boxes = boxes[image_index, prior_index]
        groups = image_index * num_classes + class_index
        kept = batched_nms(cand_boxes, cand_scores, groups, self.nms_iou)  # by score, desc.

        results = []
        kept_image = image_index[kept]
        for b in range(batch):
            mine = kept[kept_image == b][: self.keep_top_k]
            results.append(
                Detections(
                    boxes=cand_boxes[mine].cpu().numpy(),
                    scores=cand_scores[mine].cpu().numpy(),
                    labels=(class_index[mine] + 1).cpu().numpy(),
                )
            )
        return results
