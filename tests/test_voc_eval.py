"""Tests of dsod.evaluation.voc against hand-worked cases and a devkit-style reference loop."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsod.evaluation.voc import evaluate_voc, format_voc_table, voc_ap
from dsod.evaluation.voc_files import (
    plot_pr_curves,
    pr_curves_figure,
    read_voc_results,
    read_voc_results_in_file_order,
    write_voc_results,
)
from dsod.structures import Annotation, Detections


def ann(image_id, boxes, labels=None, difficult=None) -> Annotation:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    n = boxes.shape[0]
    labels = np.ones(n, np.int64) if labels is None else np.asarray(labels, np.int64)
    difficult = np.zeros(n, bool) if difficult is None else np.asarray(difficult, bool)
    return Annotation(image_id, f"{image_id}.jpg", 100, 100, boxes, labels, difficult)


def det(boxes, scores, labels=None) -> Detections:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.ones(boxes.shape[0], np.int64) if labels is None else np.asarray(labels, np.int64)
    return Detections(boxes, np.asarray(scores, np.float32), labels)


# --- the hand-worked case ---------------------------------------------------------------
# Image "a" has gts g1=(0,0,10,10), g2=(20,20,30,30); image "b" has g3=(0,0,10,10): npos=3.
# Detections (score: target -> outcome):
#   0.9: g1 exactly        -> TP   cum tp/fp 1/0  rec 1/3 prec 1
#   0.8: (50,50,60,60) in a -> FP       1/1  rec 1/3 prec 1/2
#   0.7: g3 exactly        -> TP        2/1  rec 2/3 prec 2/3
#   0.6: g1 again          -> FP (dup)  2/2  rec 2/3 prec 1/2
#   0.5: g2 exactly        -> TP        3/2  rec 1   prec 3/5
HAND_REC = np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0])
HAND_PREC = np.array([1.0, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
# Area: envelope from the right = 1, 1, 2/3, 2/3, 3/5; recall steps of 1/3 at precisions
# 1, 2/3, 3/5: AP = 1/3 + 2/9 + 1/5 = (15 + 10 + 9) / 45 = 34/45.
HAND_AP = 34 / 45
# 11-point: t = 0, .1, .2, .3 -> max prec = 1 (4 points); t = .4, .5, .6 -> recall >= t
# at 2/3 and 1: max(2/3, 1/2, 3/5) = 2/3 (3 points); t = .7, .8, .9, 1 -> only recall 1:
# 3/5 (4 points). AP07 = (4 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4 / 11.
HAND_AP07 = 8.4 / 11


def hand_case():
    anns = [ann("a", [[0, 0, 10, 10], [20, 20, 30, 30]]), ann("b", [[0, 0, 10, 10]])]
    dets = {
        "a": det(
            [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [20, 20, 30, 30]],
            [0.9, 0.8, 0.6, 0.5],
        ),
        "b": det([[0, 0, 10, 10]], [0.7]),
    }
    return anns, dets


def test_voc_ap_hand_values():
    assert voc_ap(HAND_REC, HAND_PREC, use_07_metric=False) == pytest.approx(HAND_AP, abs=1e-12)
    assert voc_ap(HAND_REC, HAND_PREC, use_07_metric=True) == pytest.approx(HAND_AP07, abs=1e-12)
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), use_07_metric=False) == 0.0


def test_eleven_point_thresholds_follow_matlab_colon():
    # VOCevaldet.m loops t = 0:0.1:1; MATLAB builds 0.6 as 1 - 4*0.1 == 0.6, so a recall of
    # exactly 6/10 counts at t = 0.6: thresholds 0..0.6 are 7 points -> 7/11. (numpy's
    # arange gives 0.6000000000000001 and would yield 6/11.) And 0.3 is 3*0.1 =
    # 0.30000000000000004 in MATLAB too, so recall 3/10 reaches only t = 0, .1, .2 -> 3/11.
    assert voc_ap(np.array([6 / 10]), np.array([1.0]), True) == pytest.approx(7 / 11, abs=1e-12)
    assert voc_ap(np.array([3 / 10]), np.array([1.0]), True) == pytest.approx(3 / 11, abs=1e-12)


def test_evaluate_hand_case():
    anns, dets = hand_case()
    r = evaluate_voc(anns, dets, ["obj"])
    np.testing.assert_allclose(r.recall[0], HAND_REC, atol=1e-12)
    np.testing.assert_allclose(r.precision[0], HAND_PREC, atol=1e-12)
    assert r.num_gt.tolist() == [3]
    assert r.ap[0] == pytest.approx(HAND_AP, abs=1e-12)
    assert r.ap07[0] == pytest.approx(HAND_AP07, abs=1e-12)
    assert r.map == pytest.approx(HAND_AP) and r.map07 == pytest.approx(HAND_AP07)


def test_duplicate_detection_is_false_positive():
    # Two detections on the single gt: first (0.9) TP, second (0.8) FP -> precision 1, 1/2.
    r = evaluate_voc(
        [ann("a", [[0, 0, 10, 10]])],
        {"a": det([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8])},
        ["obj"],
    )
    np.testing.assert_allclose(r.precision[0], [1.0, 0.5])
    np.testing.assert_allclose(r.recall[0], [1.0, 1.0])


def test_difficult_gt_is_ignored():
    # gts: g1=(0,0,10,10) normal, g2=(50,50,60,60) difficult -> npos = 1.
    # d1 (0.9) on g2 is ignored (neither TP nor FP); d2 (0.8) on g1 is TP.
    # If d1 counted as FP: precision 0, 1/2 and AP = 1/2; ignored: precision [1], AP = 1.
    a = ann("a", [[0, 0, 10, 10], [50, 50, 60, 60]], difficult=[False, True])
    r = evaluate_voc([a], {"a": det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.8])}, ["obj"])
    assert r.num_gt.tolist() == [1]
    assert r.num_detections.tolist() == [1]
    np.testing.assert_allclose(r.recall[0], [1.0])
    np.testing.assert_allclose(r.precision[0], [1.0])
    assert r.ap[0] == 1.0 and r.ap07[0] == pytest.approx(1.0)


def test_best_overlap_decides_without_fallback():
    # gts g1=(0,0,10,10), g2=(0,0,10,12). d1 = g1 exactly (TP on g1). d2 = (0,0,10,10.5),
    # devkit (1,1,10,10.5), 10 x 10.5 = 105 px. With g1 (100 px): inter 100, union 105 ->
    # .952; with g2 (120 px): inter 105, union 120 -> .875. Its best gt is g1, already
    # taken -> FP, although g2 is free and above 0.5 (no fallback). Precision 1, 1/2.
    a = ann("a", [[0, 0, 10, 10], [0, 0, 10, 12]])
    r = evaluate_voc([a], {"a": det([[0, 0, 10, 10], [0, 0, 10, 10.5]], [0.9, 0.8])}, ["obj"])
    np.testing.assert_allclose(r.precision[0], [1.0, 0.5])
    np.testing.assert_allclose(r.recall[0], [0.5, 0.5])


def test_plus_one_pixel_iou_convention():
    # VOC XML gt (1,1,2,2) = 2x2 pixels, internal (0,0,2,2). Detection XML (1,1,2,1) = 2x1
    # pixels, internal (0,0,2,1). Devkit: iw = 2-1+1 = 2, ih = 1-1+1 = 1, inter 2,
    # union 4 + 2 - 2 = 4 -> IoU 0.5 >= 0.5 -> TP. Without the +1 on the XML numbers the
    # detection has height 0 -> no overlap -> FP. (Also checks ">=" rather than ">".)
    r = evaluate_voc([ann("a", [[0, 0, 2, 2]])], {"a": det([[0, 0, 2, 1]], [0.9])}, ["obj"])
    assert r.ap[0] == 1.0
    # Internal gt (0,0,2,2), det (0,0,1,3): true IoU = inter 1*2 / (3 + 4 - 2) = 0.4 -> FP.
    # Adding +1 to the *internal* numbers (a double +1) would give 6 / (8 + 9 - 6) = 0.545.
    r = evaluate_voc([ann("a", [[0, 0, 2, 2]])], {"a": det([[0, 0, 1, 3]], [0.9])}, ["obj"])
    assert r.ap[0] == 0.0
    assert r.precision[0].tolist() == [0.0]


def test_class_without_gt_is_nan_and_excluded():
    # class 2 has no gt (only a detection) -> NaN AP, mAP is class 1's AP = 1.
    r = evaluate_voc(
        [ann("a", [[0, 0, 10, 10]])],
        {"a": det([[0, 0, 10, 10], [5, 5, 9, 9]], [0.9, 0.8], [1, 2])},
        ["x", "y"],
    )
    assert r.ap[0] == 1.0 and math.isnan(r.ap[1]) and math.isnan(r.ap07[1])
    assert r.map == 1.0 and r.map07 == pytest.approx(1.0)
    assert "x" in format_voc_table(r) and "mAP" in format_voc_table(r)


def test_unknown_image_raises():
    with pytest.raises(ValueError, match="unknown image"):
        evaluate_voc([ann("a", [[0, 0, 10, 10]])], {"zz": det([[0, 0, 1, 1]], [0.5])}, ["obj"])


def test_results_round_trip(tmp_path, caplog):
    anns, dets = hand_case()
    dets["b"] = det([[0, 0, 10, 10], [1.5, 2.25, 7, 8]], [0.7, 0.3], [1, 2])
    paths = write_voc_results(tmp_path, anns, dets, ["obj", "other"])
    assert [p.name for p in paths] == ["comp4_det_test_obj.txt", "comp4_det_test_other.txt"]
    # internal (1.5, 2.25, 7, 8) -> devkit (2.5, 3.25, 7, 8); the float32 score 0.3 is
    # 0.30000001192092896, written in full so that the devkit reads the same number
    assert paths[1].read_text() == "b 0.30000001192092896 2.5 3.25 7 8\n"
    back = read_voc_results(tmp_path, ["obj", "other"])
    assert set(back) == {"a", "b"}
    for key in dets:  # exactly the numbers that were written
        assert back[key].boxes.tolist() == dets[key].boxes.astype(np.float64).tolist()
        assert back[key].scores.tolist() == dets[key].scores.astype(np.float64).tolist()
        assert back[key].labels.tolist() == dets[key].labels.tolist()
    r1 = evaluate_voc(anns, dets, ["obj", "other"])
    r2 = evaluate_voc(anns, back, ["obj", "other"])
    assert r2.ap[0] == r1.ap[0] == pytest.approx(HAND_AP)
    paths[1].unlink()
    with caplog.at_level(logging.WARNING):
        back = read_voc_results(tmp_path, ["obj", "other"])
    assert "comp4_det_test_other.txt" in caplog.text
    assert back["b"].labels.tolist() == [1]


def test_results_keep_iou_and_score_differences_that_rounding_would_erase(tmp_path):
    # A box edge at 10.04 would be written 10.0 at 0.1 px, and the scores 0.50000006 and
    # 0.5 would both be written 0.500000 at 6 decimals: the devkit would score other data.
    anns = [ann("a", [[0, 0, 10, 20]]), ann("b", [[50, 50, 60, 60]])]
    dets = {"a": det([[0, 0, 10, 10.04]], [0.50000006]), "b": det([[0, 0, 5, 5]], [0.5])}
    write_voc_results(tmp_path, anns, dets, ["obj"])
    back = read_voc_results(tmp_path, ["obj"])
    assert back["a"].scores[0] > back["b"].scores[0]
    assert back["a"].boxes.tolist() == dets["a"].boxes.astype(np.float64).tolist()
    assert (
        evaluate_voc(anns, back, ["obj"]).ap.tolist()
        == evaluate_voc(anns, dets, ["obj"]).ap.tolist()
    )


def test_equal_scores_from_files_rank_in_line_order_as_the_devkit(tmp_path):
    # gts: one box in "a", one in "b" (npos = 2). Both lines score 0.7; the file lists the
    # miss on "b" first. The devkit ranks FP (b) then TP (a): precision 0, 1/2 at recall
    # 0, 1/2 -> area AP 0.5 * 0.5 = 0.25. In image-list order (a first) it would be 0.5.
    anns = [ann("a", [[0, 0, 10, 10]]), ann("b", [[0, 0, 10, 10]])]
    (tmp_path / "comp4_det_test_obj.txt").write_text("b 0.7 31 31 40 40\na 0.7 1 1 10 10\n")
    back, order = read_voc_results_in_file_order(tmp_path, ["obj"])
    assert {key: value.tolist() for key, value in order.items()} == {"b": [0], "a": [1]}
    assert evaluate_voc(anns, back, ["obj"], tie_break=order).ap[0] == pytest.approx(0.25)
    assert evaluate_voc(anns, back, ["obj"]).ap[0] == pytest.approx(0.5)


def test_malformed_results_line_names_file(tmp_path):
    (tmp_path / "comp4_det_test_obj.txt").write_text("a 0.5 1 1 5 5\na 0.4 1 1 five 5\n")
    with pytest.raises(ValueError, match=r"comp4_det_test_obj\.txt:2"):
        read_voc_results(tmp_path, ["obj"])
    (tmp_path / "comp4_det_test_obj.txt").write_text("a 0.5 1 1 5\n")
    with pytest.raises(ValueError, match=r"comp4_det_test_obj\.txt:1"):
        read_voc_results(tmp_path, ["obj"])
    (tmp_path / "comp4_det_test_obj.txt").write_bytes(b"a 0.5 1 1 5 5\n\xff\xfe\n")
    with pytest.raises(ValueError, match=r"comp4_det_test_obj\.txt: not a text results file"):
        read_voc_results(tmp_path, ["obj"])


def test_pr_curves_plot_each_classes_recall_against_precision():
    anns, dets = hand_case()
    r = evaluate_voc(anns, dets, ["obj", "unseen"])  # no box is labelled 2
    obj, unseen = pr_curves_figure(r).axes
    (curve,) = obj.lines
    # Ranked 0.9 hit, 0.8 miss, 0.7 hit, 0.6 duplicate, 0.5 hit, of 3 ground truths.
    np.testing.assert_allclose(curve.get_xdata(), [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(curve.get_ydata(), [1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    assert obj.get_title() == f"obj AP={r.ap[0]:.3f}" and r.ap[0] > 0
    assert len(unseen.lines) == 0 and unseen.get_title() == "unseen AP=nan"
    assert obj.get_xlim() == (0, 1) and obj.get_ylim() == (0, 1.02)


def test_the_pr_curves_png_shows_the_curve_in_its_panel(tmp_path):
    import cv2

    anns, dets = hand_case()
    r = evaluate_voc(anns, dets, ["obj", "unseen"])
    image = cv2.imread(str(plot_pr_curves(r, None, tmp_path / "pr.png")))
    assert image.shape == (240, 520, 3)  # two panels side by side, 2.6 x 2.4 in each at 100 dpi
    height, width = image.shape[:2]

    def pixels(ax):  # the panel's part of the image (rows counted from the top)
        x0, y0, x1, y1 = ax.get_position().extents
        return (
            slice(round((1 - y1) * height), round((1 - y0) * height)),
            slice(round(x0 * width), round(x1 * width)),
        )

    # matplotlib's first line colour, #1f77b4, in BGR: the curve is drawn in the first panel
    # only, and ends at recall 1 (the panel's right edge) at precision 3/5.
    line = np.abs(image.astype(int) - [180, 119, 31]).sum(axis=2) < 40
    obj, unseen = pr_curves_figure(r).axes
    assert line[pixels(obj)].sum() > 100 and line[pixels(unseen)].sum() == 0
    rows, cols = pixels(obj)
    end_row = rows.stop - round(3 / 5 / 1.02 * (rows.stop - rows.start))
    assert line[end_row - 2 : end_row + 3, cols.stop - 4 : cols.stop].any()


# --- property test ----------------------------------------------------------------------
coord, size = st.integers(0, 40), st.integers(1, 20)
box_st = st.tuples(coord, coord, size, size).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


def _box_and_label(item):
    return tuple(item[0]) + (item[1],)


@settings(max_examples=40, deadline=None)
@given(
    # Unique boxes per image and class: with two identical gts the devkit sends both perfect
    # detections to the first one (argmax takes the first), so the second would be an FP.
    gts=st.lists(
        st.lists(st.tuples(box_st, st.integers(1, 2)), max_size=4, unique_by=_box_and_label),
        min_size=1,
        max_size=4,
    ),
    noise=st.lists(
        st.tuples(st.integers(0, 3), box_st, st.integers(1, 2), st.floats(0, 1)), max_size=12
    ),
)
def test_ap_in_unit_interval_and_perfect_is_one(gts, noise):
    anns = [ann(str(i), [b for b, _ in g], [c for _, c in g]) for i, g in enumerate(gts)]
    perfect = {a.image_id: det(a.boxes, np.linspace(1, 0.5, len(a)), a.labels) for a in anns}
    r = evaluate_voc(anns, perfect, ["x", "y"])
    for c in range(2):
        if r.num_gt[c] > 0:
            assert r.ap[c] == 1.0 and r.ap07[c] == pytest.approx(1.0)
        else:
            assert math.isnan(r.ap[c])
    noisy = {}
    for img, box, label, score in noise:
        key = str(img % len(anns))
        d = noisy.setdefault(key, ([], [], []))
        d[0].append(box), d[1].append(score), d[2].append(label)
    r = evaluate_voc(anns, {k: det(*v) for k, v in noisy.items()}, ["x", "y"])
    valid = r.num_gt > 0
    assert np.all((r.ap[valid] >= 0) & (r.ap[valid] <= 1 + 1e-12))
    assert np.all((r.ap07[valid] >= 0) & (r.ap07[valid] <= 1 + 1e-12))


# --- cross-check against a straightforward per-detection devkit loop ---------------------
def reference_voc(anns, dets, num_classes, thr):
    """VOCevaldet.m transcribed literally: one loop per detection. Returns per class
    (ap07, ap, rec, prec) with rec/prec keeping ignored detections (tp = fp = 0)."""
    out = []
    for c in range(1, num_classes + 1):
        gt = {}
        npos = 0
        for a in anns:
            m = a.labels == c
            b = a.boxes[m].astype(np.float64) + [1, 1, 0, 0]
            gt[a.image_id] = (b, a.difficult[m], [False] * int(m.sum()))
            npos += int((~a.difficult[m]).sum())
        items = []
        for a in anns:
            d = dets.get(a.image_id)
            if d is None:
                continue
            for k in range(len(d)):
                if d.labels[k] == c:
                    box = d.boxes[k].astype(np.float64) + [1, 1, 0, 0]
                    items.append((a.image_id, float(d.scores[k]), box))
        items = sorted(items, key=lambda it: -it[1])  # Python's sort is stable
        tp, fp = [], []
        for image_id, _, bb in items:
            boxes, diff, used = gt[image_id]
            ovmax, jmax = -math.inf, -1
            for j, g in enumerate(boxes):
                iw = min(bb[2], g[2]) - max(bb[0], g[0]) + 1
                ih = min(bb[3], g[3]) - max(bb[1], g[1]) + 1
                if iw > 0 and ih > 0:
                    ua = (
                        (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                        + (g[2] - g[0] + 1) * (g[3] - g[1] + 1)
                        - iw * ih
                    )
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            if ovmax >= thr:
                if diff[jmax]:
                    tp.append(0), fp.append(0)
                elif not used[jmax]:
                    used[jmax] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        ctp, cfp = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
        rec = ctp / npos if npos else ctp * np.nan
        prec = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
        keep = (np.array(tp) + np.array(fp)) > 0 if tp else np.zeros(0, bool)
        if npos == 0:
            out.append((math.nan, math.nan, rec[keep], prec[keep]))
            continue
        ap07 = 0.0
        # MATLAB's 0:0.1:1 (first half k*0.1, second half 1 - k*0.1)
        for t in [0.0, 0.1, 0.2, 3 * 0.1, 0.4, 0.5, 1 - 0.4, 1 - 0.3, 0.8, 0.9, 1.0]:
            p = prec[rec >= t]
            ap07 += (p.max() if p.size else 0.0) / 11
        mrec = [0.0, *rec, 1.0]
        mpre = [0.0, *prec, 0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        ap = sum(
            (mrec[i + 1] - mrec[i]) * mpre[i + 1]
            for i in range(len(mrec) - 1)
            if mrec[i + 1] != mrec[i]
        )
        out.append((ap07, ap, rec[keep], prec[keep]))
    return out


def random_scene(rng, num_images=25, num_classes=3):
    anns, dets = [], {}
    for i in range(num_images):
        n = int(rng.integers(0, 6))
        xy = rng.integers(0, 15, (n, 2))
        gb = np.concatenate([xy, xy + rng.integers(1, 10, (n, 2))], 1)
        gl = rng.integers(1, num_classes + 1, n)
        if n and rng.random() < 0.4:  # a duplicated gt: exact IoU ties between gts
            j = int(rng.integers(0, n))
            gb, gl, n = (
                np.concatenate([gb, gb[j : j + 1]]),
                np.concatenate([gl, gl[j : j + 1]]),
                n + 1,
            )
        anns.append(ann(f"im{i}", gb, gl, rng.random(n) < 0.3))
        if rng.random() < 0.15:
            continue  # an image without detections
        k = int(rng.integers(0, 12))
        xy = rng.integers(0, 15, (k, 2))
        db = np.concatenate([xy, xy + rng.integers(1, 10, (k, 2))], 1).astype(np.float64)
        dl = rng.integers(1, num_classes + 1, k)
        if n:  # copies and half-pixel jitters of gts: TPs, duplicates, IoU ties
            src = rng.integers(0, n, k // 2)
            db[: k // 2] = gb[src] + rng.integers(-1, 2, (k // 2, 4)) * 0.5
            dl[: k // 2] = gl[src]
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 0.5)
        scores = rng.choice([0.1, 0.25, 0.5, 0.75, 0.9], k)  # many ties
        dets[f"im{i}"] = det(db, scores, dl)
    return anns, dets


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("thr", [0.5, 0.3])
def test_vectorised_matches_reference_loop(seed, thr):
    rng = np.random.default_rng(seed)
    anns, dets = random_scene(rng)
    names = ["a", "b", "c"]
    r = evaluate_voc(anns, dets, names, iou_threshold=thr)
    ref = reference_voc(anns, dets, len(names), thr)
    for c, (ap07, ap, rec, prec) in enumerate(ref):
        np.testing.assert_allclose(r.ap07[c], ap07, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(r.ap[c], ap, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(r.recall[c], rec, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(r.precision[c], prec, atol=1e-12)
