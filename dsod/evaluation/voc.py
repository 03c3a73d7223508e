"""PASCAL VOC detection metrics, matching the official devkit (``VOCevaldet.m``).

Boxes come in the package's internal convention (absolute ``xyxy``, continuous pixels, see
:mod:`dsod.structures`). For scoring they are converted back to the devkit's 1-based
inclusive pixels ``(x1 + 1, y1 + 1, x2, y2)`` and overlaps use the devkit's ``+1`` sizes, so
results agree with the devkit run on the same boxes.

Devkit rules reproduced here, per class:

* detections are ranked by descending score with a *stable* sort; ties keep the order of
  ``annotations`` (the image list) and, within an image, the order of its ``Detections``
  (which is the line order :func:`write_voc_results` produces), or the order given by
  ``tie_break`` (the line order of results files that were read);
* a detection is compared with all ground truths of its image and class (difficult ones
  included) and only its best-overlap ground truth (first one on ties) decides:
  ``IoU >= threshold`` (the devkit's ``ovmax >= minoverlap``) on a difficult box -> ignored
  (neither TP nor FP; dropped from the recall/precision arrays, which leaves AP unchanged),
  on a not yet matched box -> TP, on an already matched box -> FP; below threshold -> FP;
* ``num_gt`` (the devkit's ``npos``) counts non-difficult ground truths only.

Classes without any non-difficult ground truth get ``NaN`` AP and are left out of the mAP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dsod.structures import Annotation, Detections

# MATLAB's ``0:0.1:1`` as VOCevaldet.m iterates it: the colon operator builds the first half
# as ``k * 0.1`` and the second half as ``1 - k * 0.1``. It differs from numpy's
# ``np.arange(0, 1.1, 0.1)`` (used by py-faster-rcnn) at 0.6 and 0.7 by one ulp, which
# matters only when a recall equals 6/10 or 7/10 exactly.
_ELEVEN_POINTS = np.array([k * 0.1 for k in range(6)] + [1.0 - k * 0.1 for k in range(4, -1, -1)])


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from a ranked recall/precision curve, as the VOC devkit computes it.

    Args:
        recall: ``[K]`` cumulative recall after each ranked detection (non-decreasing).
        precision: ``[K]`` cumulative precision after each ranked detection.
        use_07_metric: ``True``: VOC2007 11-point AP, the mean over ``t in 0, 0.1, ..., 1`` of
            the maximum precision at ``recall >= t`` (0 when no such point). ``False``:
            VOC2010+ area under the precision envelope (precision made monotone from the
            right, summed over recall steps).

    Returns:
        AP in ``[0, 1]``; 0 for an empty curve.
    """
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision differ in shape: {rec.shape} vs {prec.shape}")
    if use_07_metric:
        ap = 0.0
        for t in _ELEVEN_POINTS:
            above = prec[rec >= t]
            ap += (float(above.max()) if above.size else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass
class VOCResult:
    """VOC metrics of one evaluation.

    Attributes:
        class_names: ``C`` class names; index ``c`` is label ``c + 1``.
        ap07: float64 ``[C]`` VOC2007 11-point AP per class (``NaN`` when ``num_gt == 0``).
        ap: float64 ``[C]`` VOC2010+ area AP per class (``NaN`` when ``num_gt == 0``).
        num_gt: int64 ``[C]`` non-difficult ground truths per class (the devkit's ``npos``).
        num_detections: int64 ``[C]`` scored detections per class (ignored ones excluded).
        recall: ``C`` float64 arrays ``[K_c]``: recall after each ranked detection.
        precision: ``C`` float64 arrays ``[K_c]``: precision after each ranked detection.
        map07: mean of ``ap07`` over classes with ``num_gt > 0`` (``NaN`` if none).
        map: mean of ``ap`` over classes with ``num_gt > 0`` (``NaN`` if none).
        iou_threshold: the overlap threshold used.
    """

    class_names: list[str]
    ap07: np.ndarray
    ap: np.ndarray
    num_gt: np.ndarray
    num_detections: np.ndarray
    recall: list[np.ndarray]
    precision: list[np.ndarray]
    map07: float
    map: float
    iou_threshold: float


def _devkit_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise devkit IoU of ``[P, 4]`` boxes in 1-based inclusive pixels; ``-1`` where the
    boxes do not overlap (``iw <= 0`` or ``ih <= 0``; the devkit never picks those)."""
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0
    inter = iw * ih
    union = (
        (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
        + (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
        - inter
    )
    overlap = (iw > 0) & (ih > 0) & (union > 0)
    out = np.full(inter.shape, -1.0)
    np.divide(inter, union, out=out, where=overlap)
    return out


def _match(
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    gt_difficult: np.ndarray,
    gt_image: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_labels: np.ndarray,
    det_image: np.ndarray,
    iou_threshold: float,
    det_tie_key: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised devkit matching over all classes at once.

    Ground truth: boxes ``[G, 4]`` in devkit 1-based pixels, labels/difficult/image index
    ``[G]``; detections likewise ``[D, 4]`` and ``[D]``. The pairs of a detection with the gts
    of its (image, class) are laid out flat, so the cost is the number of such pairs.

    Returns ``(tp, ignored, order)``: ``order`` ranks all detections by (label, descending
    score, ``det_tie_key`` ``[D]`` ascending, input position); ``tp``/``ignored`` are bool
    ``[D]`` in that ranked order.
    """
    num_groups = int(max(gt_labels.max(initial=0), det_labels.max(initial=0))) + 1
    gt_key = gt_image * num_groups + gt_labels
    gt_order = np.argsort(gt_key, kind="stable")  # keeps each image's gt order
    gt_key_sorted = gt_key[gt_order]
    det_key = det_image * num_groups + det_labels
    start = np.searchsorted(gt_key_sorted, det_key, side="left")
    count = np.searchsorted(gt_key_sorted, det_key, side="right") - start

    # One row per (detection, same-image same-class gt) pair, grouped by detection.
    best_gt = np.full(det_key.shape, -1, dtype=np.int64)
    best_iou = np.full(det_key.shape, -np.inf)
    with_gt = np.flatnonzero(count > 0)
    if with_gt.size:
        cnt = count[with_gt]
        seg_start = np.cumsum(cnt) - cnt
        seg_id = np.repeat(np.arange(with_gt.size), cnt)
        offset = np.arange(seg_id.size) - seg_start[seg_id]
        pair_gt = gt_order[start[with_gt][seg_id] + offset]
        iou = _devkit_iou(det_boxes[with_gt][seg_id], gt_boxes[pair_gt])
        seg_max = np.maximum.reduceat(iou, seg_start)
        is_max = np.flatnonzero(iou == seg_max[seg_id])
        first = is_max[np.r_[True, seg_id[is_max][1:] != seg_id[is_max][:-1]]]
        best_gt[with_gt] = pair_gt[first]  # first gt reaching the max, as the devkit's ">"
        best_iou[with_gt] = seg_max

    keys = (
        (-det_scores, det_labels)
        if det_tie_key is None
        else (det_tie_key, -det_scores, det_labels)
    )
    order = np.lexsort(keys)  # lexsort is stable
    best_gt, best_iou = best_gt[order], best_iou[order]
    matched = best_iou >= iou_threshold
    ignored = np.zeros(order.shape, dtype=bool)
    ignored[matched] = gt_difficult[best_gt[matched]]
    candidates = np.flatnonzero(matched & ~ignored)
    # Only the first-ranked detection claiming a gt is a TP; a gt's class is the detections'
    # class, so ranking all classes together gives the same "first" as ranking per class.
    _, first_claim = np.unique(best_gt[candidates], return_index=True)
    tp = np.zeros(order.shape, dtype=bool)
    tp[candidates[first_claim]] = True
    return tp, ignored, order


def _mean_valid(values: np.ndarray) -> float:
    valid = values[~np.isnan(values)]
    return float(valid.mean()) if valid.size else math.nan


def evaluate_voc(
    annotations: Sequence[Annotation],
    detections: Mapping[str, Detections],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    tie_break: Mapping[str, np.ndarray] | None = None,
) -> VOCResult:
    """Score detections against ground truth with the VOC devkit's rules (module docstring).

    Args:
        annotations: the ground truth of every image of the test set (boxes internal ``xyxy``,
            labels ``1..C``); their order is the devkit's image list order.
        detections: ``image_id -> Detections`` (boxes internal ``xyxy``, labels ``1..C``);
            images may be missing (no detections); unknown image ids raise ``ValueError``.
        class_names: the ``C`` class names.
        iou_threshold: minimum devkit IoU for a match (``>=``), in ``[0, 1]``.
        tie_break: ``image_id -> [K]`` numbers, one per detection of that image (every
            image of ``detections``): detections of equal score rank by them, lowest first,
            e.g. their line positions in devkit results files, which is how the devkit
            ranks the lines it reads (:func:`~dsod.evaluation.voc_files.read_voc_results`
            gives them). None: the order of ``annotations``, then of each image's detections.

    Returns:
        A :class:`VOCResult`.
    """
    num_classes = len(class_names)
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    index = {ann.image_id: i for i, ann in enumerate(annotations)}
    if len(index) != len(annotations):
        raise ValueError("annotations contain duplicate image ids")
    unknown = [k for k in detections if k not in index]
    if unknown:
        raise ValueError(f"detections for {len(unknown)} unknown image id(s), e.g. {unknown[0]!r}")

    def gather(records: list, attr: str, dtype, width: int | None = None) -> np.ndarray:
        parts = [np.asarray(getattr(r, attr), dtype=dtype) for r in records]
        if not parts:
            return np.zeros((0, width) if width else (0,), dtype=dtype)
        if width:
            parts = [p.reshape(-1, width) for p in parts]
        return np.concatenate(parts)

    anns = list(annotations)
    gt_boxes = gather(anns, "boxes", np.float64, 4)
    gt_labels = gather(anns, "labels", np.int64)
    gt_difficult = gather(anns, "difficult", bool)
    gt_image = np.repeat(np.arange(len(anns)), [len(a) for a in anns])
    dets = [(i, detections[a.image_id]) for i, a in enumerate(anns) if a.image_id in detections]
    det_records = [d for _, d in dets]
    det_boxes = gather(det_records, "boxes", np.float64, 4)
    det_scores = gather(det_records, "scores", np.float64)
    det_labels = gather(det_records, "labels", np.int64)
    det_image = np.repeat(
        np.array([i for i, _ in dets], dtype=np.int64), [len(d) for d in det_records]
    )
    if not (gt_boxes.shape[0] == gt_labels.size == gt_difficult.size):
        raise ValueError("annotation boxes, labels and difficult flags differ in length")
    if not (det_boxes.shape[0] == det_scores.size == det_labels.size):
        raise ValueError("detection boxes, scores and labels differ in length")
    det_tie_key = None
    if tie_break is not None:
        det_tie_key = np.concatenate(
            [np.zeros(0)]
            + [
                np.asarray(tie_break.get(anns[i].image_id, ()), dtype=np.float64).ravel()
                for i, _ in dets
            ]
        )
        if det_tie_key.size != det_scores.size:
            raise ValueError("tie_break needs one number per detection")
    for name, labels in (("ground-truth", gt_labels), ("detection", det_labels)):
        if labels.size and (labels.min() < 1 or labels.max() > num_classes):
            raise ValueError(f"{name} labels must be in 1..{num_classes}")
    if not (np.isfinite(det_boxes).all() and np.isfinite(det_scores).all()):
        raise ValueError("detections contain non-finite boxes or scores")

    # Devkit 1-based inclusive pixel coordinates.
    shift = np.array([1.0, 1.0, 0.0, 0.0])
    tp, ignored, order = _match(
        gt_boxes + shift,
        gt_labels,
        gt_difficult,
        gt_image,
        det_boxes + shift,
        det_scores,
        det_labels,
        det_image,
        iou_threshold,
        det_tie_key,
    )

    sorted_labels = det_labels[order]
    bounds = np.searchsorted(sorted_labels, np.arange(1, num_classes + 2))
    num_gt = np.bincount(gt_labels[~gt_difficult], minlength=num_classes + 1)[1:].astype(np.int64)
    ap07 = np.full(num_classes, np.nan)
    ap = np.full(num_classes, np.nan)
    num_det = np.zeros(num_classes, dtype=np.int64)
    recalls: list[np.ndarray] = []
    precisions: list[np.ndarray] = []
    for c in range(num_classes):
        sl = slice(bounds[c], bounds[c + 1])
        keep = ~ignored[sl]
        tp_c = tp[sl][keep]
        cum_tp = np.cumsum(tp_c, dtype=np.float64)
        cum_fp = np.cumsum(~tp_c, dtype=np.float64)
        npos = int(num_gt[c])
        rec = cum_tp / npos if npos > 0 else np.full(cum_tp.shape, np.nan)
        prec = cum_tp / np.maximum(cum_tp + cum_fp, np.finfo(np.float64).eps)
        recalls.append(rec)
        precisions.append(prec)
        num_det[c] = tp_c.size
        if npos > 0:
            ap07[c] = voc_ap(rec, prec, use_07_metric=True)
            ap[c] = voc_ap(rec, prec, use_07_metric=False)
    return VOCResult(
        class_names=list(class_names),
        ap07=ap07,
        ap=ap,
        num_gt=num_gt,
        num_detections=num_det,
        recall=recalls,
        precision=precisions,
        map07=_mean_valid(ap07),
        map=_mean_valid(ap),
        iou_threshold=float(iou_threshold),
    )


def format_voc_table(result: VOCResult) -> str:
    """A plain-text table: one row per class (name, num_gt, AP07, AP area), then the means."""
    width = max([len("class"), len("mAP")] + [len(n) for n in result.class_names])
    rows = [f"{'class':<{width}}  {'num_gt':>6}  {'AP07':>6}  {'AP':>6}"]
    for name, n, a07, a in zip(result.class_names, result.num_gt, result.ap07, result.ap):
        rows.append(f"{name:<{width}}  {int(n):>6d}  {a07:>6.4f}  {a:>6.4f}")
    total = int(result.num_gt.sum())
    rows.append(f"{'mAP':<{width}}  {total:>6d}  {result.map07:>6.4f}  {result.map:>6.4f}")
    return "\n".join(rows)
