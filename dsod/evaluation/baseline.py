"""What a detector that never looks at the image scores: the chance level of a test set.

It predicts, for every test image, the training boxes themselves: each class's boxes
relative to their images' sizes, scaled to the test image and scored by how typical they
are (their mean IoU with the other boxes of the class). On a set of one large, centred
object an image this scores high; a detector's figure is to be read against it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from dsod.structures import Annotation, Detections

__all__ = ["blind_detections"]


def blind_detections(
    training: Sequence[Annotation], test: Sequence[Annotation], per_class: int = 200
) -> dict[str, Detections]:
    """The detections of the predictor that never looks at the image.

    Args:
        training: the training annotations (boxes absolute ``xyxy`` in their images).
        test: the test annotations; only their ids and sizes are used.
        per_class: how many of each class's most typical training boxes every test image
            gets.

    Returns:
        ``image_id -> Detections`` for every test image: boxes absolute ``xyxy`` in the
        test image's pixels, scores in ``[0, 1]`` (the same for every image).
    """
    relative, labels = [], []
    for annotation in training:
        size = np.array([annotation.width, annotation.height] * 2, dtype=np.float32)
        relative.append(np.asarray(annotation.boxes, dtype=np.float32) / size)
        labels.append(np.asarray(annotation.labels, dtype=np.int64))
    boxes = np.concatenate(relative) if relative else np.zeros((0, 4), np.float32)
    classes = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    typical_boxes, typical_scores, typical_labels = [], [], []
    for label in np.unique(classes):
        own = torch.from_numpy(boxes[classes == label])
        score = box_iou(own, own).mean(1)
        order = score.argsort(descending=True)[:per_class]
        typical_boxes.append(own[order].numpy())
        typical_scores.append(score[order].numpy())
        typical_labels.append(np.full(len(order), label, dtype=np.int64))
    if not typical_boxes:
        return {annotation.image_id: Detections() for annotation in test}
    unit_boxes = np.concatenate(typical_boxes)
    scores = np.concatenate(typical_scores).astype(np.float32)
    label_array = np.concatenate(typical_labels)
    out = {}
    for annotation in test:
        size = np.array([annotation.width, annotation.height] * 2, dtype=np.float32)
        out[annotation.image_id] = Detections(
            (unit_boxes * size).astype(np.float32), scores.copy(), label_array.copy()
        )
    return out
