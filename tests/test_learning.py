"""The learning signal (image AUC) worked by hand, its chance level, and its warning."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dsod.engine.learning import (
    MAX_PARTNERS,
    RISE_FACTOR,
    LearningMonitor,
    LossWatch,
    SignalSums,
    agreement,
    pair_auc,
    partner_shifts,
    signal_sums,
)


def test_pair_auc_by_hand_with_a_tie():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.5, 0.2]])
    first = torch.tensor([[True, False, True, False, False]])  # 0.9, 0.5
    second = torch.tensor([[False, True, False, True, False]])  # 0.1, 0.5
    # pairs: 0.9>0.1, 0.9>0.5, 0.5>0.1 win; 0.5 = 0.5 ties (half): 3.5 of 4
    assert pair_auc(scores, first, second).tolist() == [0.875]


def test_pair_auc_is_nan_for_an_empty_set():
    scores = torch.rand(2, 6)
    first = torch.tensor([[True] + [False] * 5, [False] * 6])
    second = torch.tensor([[False, True] + [False] * 4, [True] * 6])
    values = pair_auc(scores, first, second)
    assert values[0].item() in (0.0, 1.0) and math.isnan(values[1].item())


def _logits_from_object_scores(scores: torch.Tensor, classes: int = 3) -> torch.Tensor:
    """Logits whose -log p(background) orders the priors as ``scores`` does."""
    logits = torch.zeros(*scores.shape, classes)
    logits[..., 1] = scores
    return logits


def test_agreement_by_hand():
    # Two images, five priors. Image 0's object covers priors 0-1, image 1's priors 1-3
    # (prior 4 is background in both); prior 1 is matched in both.
    labels = torch.tensor([[1, 1, 0, 0, 0], [0, 2, 2, 2, 0]])
    targets = torch.zeros(2, 5, 4)
    targets[0, 1] = 1.0  # at prior 1, image 0's box is at offsets 1, image 1's at 0
    # Image 0 finds its object at prior 0 (score 3), scores prior 2 (1) above prior 3 (-1),
    # and predicts offsets 0.8 at prior 1: closer to its own box (1) than to image 1's (0).
    # Image 1 sees nothing: equal scores, and offsets 0.5 at prior 1, as far from both.
    scores = torch.tensor([[3.0, 5.0, 1.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    offsets = torch.zeros(2, 5, 4)
    offsets[0, 1], offsets[1, 1] = 0.8, 0.5
    logits = _logits_from_object_scores(scores)
    values = agreement(logits, offsets, targets, labels)
    # Image 0: where: own-only {0} against other-only {2, 3}: 3 > 1, 3 > -1 -> 1.0;
    #          boxes: prior 1, own error 4 * 0.5 * 0.2^2 = 0.08 < other 4 * 0.5 * 0.8^2 -> 1.0.
    # Image 1: where: own-only {2, 3} against other-only {0}: ties -> 0.5;
    #          boxes: prior 1, equal errors -> 0.5.
    assert values.tolist() == [1.0, 0.5]
    assert signal_sums(logits, offsets, targets, labels) == SignalSums(1.5, 1.25, 2.0)
    # Image 0 deciding for image 1's box at prior 1 instead halves its agreement with it.
    offsets[0, 1] = 0.1
    assert agreement(logits, offsets, targets, labels).tolist() == [0.5, 0.5]


def test_agreement_with_three_images_averages_over_every_other_image():
    # Three images, one object each at its own prior; no prior is matched in two images,
    # so only the object scores decide (which prior holds this image's object).
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    scores = torch.tensor(
        [
            [2.0, 1.0, 0.0],  # image 0: own prior 0 above 1 (image 1's) and 2 (image 2's)
            [1.0, 0.0, 2.0],  # image 1: own prior 1 below both others' priors
            [2.0, 0.0, 1.0],  # image 2: own prior 2 below image 0's, above image 1's
        ]
    )
    values = agreement(
        _logits_from_object_scores(scores), torch.zeros(3, 3, 4), torch.zeros(3, 3, 4), labels
    )
    # image 2 decides for itself against image 1 and not against image 0: 0.5
    assert values.tolist() == [1.0, 0.0, 0.5]


def _agreement_by_definition(scores, offsets, targets, labels):
    """Per image, the mean over the other images of the pair's rates, one comparison at a
    time in plain Python (the definition in dsod.engine.learning's docstring)."""

    def decide(mine: float, theirs: float) -> float:
        return 1.0 if mine > theirs else 0.5 if mine == theirs else 0.0

    def error(predicted, target) -> float:
        return float(torch.nn.functional.smooth_l1_loss(predicted, target, reduction="sum"))

    count, priors = labels.shape
    values = []
    for i in range(count):
        pair_rates = []
        for j in range(count):
            if j == i:
                continue
            own = [p for p in range(priors) if labels[i, p] > 0 and labels[j, p] == 0]
            other = [p for p in range(priors) if labels[j, p] > 0 and labels[i, p] == 0]
            both = [p for p in range(priors) if labels[i, p] > 0 and labels[j, p] > 0]
            rates = []
            if own and other:
                wins = [decide(scores[i, a], scores[i, b]) for a in own for b in other]
                rates.append(sum(wins) / len(wins))
            if both:
                wins = [
                    decide(
                        -error(offsets[i, p], targets[i, p]), -error(offsets[i, p], targets[j, p])
                    )
                    for p in both
                ]
                rates.append(sum(wins) / len(wins))
            if rates:
                pair_rates.append(sum(rates) / len(rates))
        values.append(sum(pair_rates) / len(pair_rates) if pair_rates else math.nan)
    return values


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 5), st.integers(3, 30))
def test_agreement_matches_its_definition(seed, images, priors):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(images, priors, generator=generator).round(decimals=1)
    offsets = torch.randn(images, priors, 4, generator=generator).round(decimals=1)
    targets = torch.randn(images, priors, 4, generator=generator).round(decimals=1)
    labels = torch.randint(-1, 3, (images, priors), generator=generator)
    logits = _logits_from_object_scores(scores)
    values = agreement(logits, offsets, targets, labels)
    object_scores = -torch.log_softmax(logits, -1)[..., 0]
    expected = _agreement_by_definition(object_scores, offsets, targets, labels)
    assert values.tolist() == pytest.approx(expected, abs=1e-9, nan_ok=True)


def test_agreement_is_nan_for_one_image_and_for_annotations_that_agree():
    labels = torch.tensor([[0, 1, 1, 0]])
    targets = torch.rand(1, 4, 4)
    assert math.isnan(
        agreement(torch.randn(1, 4, 2), torch.randn(1, 4, 4), targets, labels).item()
    )
    # Same labels and the same boxes: nothing to decide between.
    same = agreement(
        torch.randn(2, 4, 2), torch.randn(2, 4, 4), targets.repeat(2, 1, 1), labels.repeat(2, 1)
    )
    assert same.tolist() == [0.5, 0.5]  # every box comparison a tie


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([2, 3, 4, 5, 6, MAX_PARTNERS + 2, 40]),  # the last two: partners capped
    st.integers(4, 60),
)
def test_a_model_that_does_not_look_at_the_image_scores_chance(seed, images, priors):
    # The same predictions for every image (what a model that ignores its input gives,
    # however much it has learnt about where objects usually are and how large they are):
    # each decision of image i against image j has its mirror in j's against i, also where
    # each image meets only MAX_PARTNERS others, so where every pair has something to
    # compare the mean is exactly 0.5.
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(priors, generator=generator).round(decimals=1).expand(images, priors)
    offsets = torch.randn(priors, 4, generator=generator).round(decimals=1)
    targets = torch.randn(images, priors + images, 4, generator=generator).round(decimals=1)
    labels = torch.randint(-1, 3, (images, priors), generator=generator)
    # one prior of each image's own, background in the others: every pair compares
    labels = torch.cat([labels, torch.eye(images, dtype=labels.dtype)], 1)
    scores = torch.cat([scores, torch.zeros(images, images)], 1)
    offsets = torch.cat([offsets, torch.zeros(images, 4)]).expand(images, -1, -1)
    values = agreement(
        _logits_from_object_scores(scores.clone()), offsets.clone(), targets, labels
    )
    assert values.mean().item() == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("images", [2, 5, MAX_PARTNERS + 1, MAX_PARTNERS + 2, 64])
def test_partners_are_capped_and_come_with_their_mirrors(images):
    shifts = partner_shifts(images)
    assert len(shifts) == min(images - 1, MAX_PARTNERS) == len(set(shifts))
    assert all(0 < k < images and images - k in shifts for k in shifts)


def test_standard_error_by_hand():
    sums = SignalSums()
    for value in (0.4, 0.6, 0.8):
        sums.add(SignalSums(value, value * value, 1.0))
    # mean 0.6, sample variance ((-0.2)^2 + 0 + 0.2^2) / 2 = 0.04, error sqrt(0.04 / 3)
    assert sums.mean() == pytest.approx(0.6)
    assert sums.standard_error() == pytest.approx((0.04 / 3) ** 0.5)
    assert math.isnan(SignalSums(0.5, 0.25, 1.0).standard_error())


def _spread(mean: float, half_width: float, images: int) -> SignalSums:
    """``images`` values at ``mean +- half_width``, half each: standard deviation
    ``half_width``."""
    low, high = mean - half_width, mean + half_width
    half = images // 2
    return SignalSums(half * (low + high), half * (low * low + high * high), 2.0 * half)


def test_monitor_averages_between_records_and_checks_once(caplog):
    monitor = LearningMonitor(max_iter=90, check_fraction=1 / 3)
    assert monitor.check_step == 30
    monitor.add(SignalSums(1.0, 0.5, 2.0))
    monitor.add(SignalSums(2.0, 2.0, 2.0))
    assert monitor.record() == {"agreement": 0.75}
    assert math.isnan(monitor.record()["agreement"])  # nothing since the last record
    for step in range(1, 31):
        # 16 images a step at 0.52 +- 0.3: over the 15 steps of the window, 240 images,
        # a standard error of 0.3 * sqrt(240 / 239) / sqrt(240) = 0.0194: 0.52 is ~1 error
        # above chance, less than the 3 needed
        monitor.add(_spread(0.52, 0.3, 16))
        with caplog.at_level(logging.WARNING):
            verdict = monitor.check(step)
        assert (verdict is None) == (step != 30)
    assert verdict["learning"] is False and verdict["agreement"] == pytest.approx(0.52)
    assert verdict["images"] == 240
    assert verdict["standard_error"] == pytest.approx(0.3 / 239**0.5)
    assert verdict["needed"] == pytest.approx(0.5 + 3 * 0.3 / 239**0.5)
    warned = [r.getMessage() for r in caplog.records if "not learning" in r.getMessage()]
    assert len(warned) == 1 and "0.520 +- 0.019" in warned[0] and "0.5 is chance" in warned[0]
    assert monitor.check(31) is None


def test_a_small_but_certain_lead_is_learning_a_large_uncertain_one_is_not():
    # 0.55 with a spread of 0.1 over 400 images: 10 errors above chance
    certain = LearningMonitor(max_iter=60)
    for step in range(1, 21):
        certain.add(_spread(0.55, 0.1, 40))
        certain.check(step)
    assert certain.verdict["learning"] is True
    # 0.6 with a spread of 0.5 over 20 images: under 1 error above chance
    uncertain = LearningMonitor(max_iter=60)
    for step in range(1, 21):
        uncertain.add(_spread(0.6, 0.5, 2))
        uncertain.check(step)
    assert uncertain.verdict["learning"] is False
    # however certain, a lead under MIN_MARGIN (0.02) is not learning
    tiny = LearningMonitor(max_iter=60)
    for step in range(1, 21):
        tiny.add(_spread(0.515, 0.01, 1000))
        tiny.check(step)
    assert tiny.verdict["learning"] is False and tiny.verdict["needed"] == pytest.approx(0.52)


def test_a_run_too_short_to_tell_is_not_checked():
    monitor = LearningMonitor(max_iter=30, check_fraction=1 / 3)
    monitor.add(SignalSums(0.5, 0.25, 1.0))
    assert all(monitor.check(step) is None for step in range(1, 31))
    assert monitor.verdict is None


@pytest.mark.parametrize(
    ("at_check", "at_end", "outcome", "level"),
    [
        (0.51, 0.70, "did learn, later", logging.INFO),
        (0.70, 0.80, "learning", logging.INFO),
        (0.70, 0.50, "fallen back to chance", logging.WARNING),
        (0.50, 0.51, "still not learning", logging.INFO),  # warned once already, at the check
    ],
)
def test_the_verdict_is_repeated_at_the_end_and_warned_only_when_it_is_news(
    at_check, at_end, outcome, level, caplog
):
    monitor = LearningMonitor(max_iter=60)
    for step in range(1, 61):
        monitor.add(_spread(at_check if step <= 20 else at_end, 0.1, 40))
        monitor.check(step)
    assert monitor.finish(10) is None  # before the check: nothing to repeat
    with caplog.at_level(logging.INFO, logger="dsod.engine.learning"):
        end = monitor.finish(60)
    # the window holds the last 10 steps (half the check step), all at at_end
    assert end["step"] == 60 and end["agreement"] == pytest.approx(at_end)
    assert end["images"] == 400 and end["learning"] is (at_end >= 0.52)
    (line,) = [r for r in caplog.records if "learning at the end" in r.getMessage()]
    assert outcome in line.getMessage() and line.levelno == level


def test_an_unchecked_run_has_no_end_verdict():
    monitor = LearningMonitor(max_iter=30)  # check step 10: too short to tell
    for step in range(1, 31):
        monitor.add(_spread(0.9, 0.1, 40))
        monitor.check(step)
    assert monitor.finish(30) is None


def test_the_loss_watch_warns_once_when_the_loss_reaches_its_factor(caplog):
    assert RISE_FACTOR == 1.5
    watch = LossWatch(advice="try a lower solver.lr (0.1 here)")
    with caplog.at_level(logging.WARNING):
        assert watch.update(20, 6.0) is None  # the first logged loss
        assert watch.update(40, 4.0) is None
        assert watch.update(60, 8.9) is None  # 1.48 times the first: within
        assert watch.update(70, math.nan) is None  # non-finite: counted elsewhere
        rise = watch.update(80, 9.0)  # 1.5 times
        assert watch.update(100, 20.0) is None  # warned once
    assert (
        rise
        == watch.rise
        == {"step": 80, "loss": 9.0, "first_step": 20, "first_loss": 6.0, "ratio": 1.5}
    )
    (line,) = [r.getMessage() for r in caplog.records if "loss is rising" in r.getMessage()]
    assert "9.000 at step 80, 1.5 times" in line and "(6.000 at step 20)" in line
    assert line.endswith("diverges: try a lower solver.lr (0.1 here)")


def test_a_resumed_loss_watch_compares_with_the_runs_first_loss():
    watch = LossWatch.resumed((20, 6.0), None, advice="try a longer solver.warmup_iters")
    assert watch.advice == "try a longer solver.warmup_iters"
    assert watch.update(500, 2.0) is None and watch.update(520, 8.0) is None
    assert watch.update(540, 9.5)["first_step"] == 20
    # a run warned before its checkpoint is not warned again
    rise = {"step": 40, "loss": 9.0, "first_step": 20, "first_loss": 6.0, "ratio": 1.5}
    warned = LossWatch.resumed((20, 6.0), rise)
    assert warned.update(560, 30.0) is None and warned.rise == rise
    # without its first loss a resumed watch is off: a late, low loss is no baseline
    blind = LossWatch.resumed(None, None)
    assert blind.update(500, 0.5) is None and blind.update(520, 5.0) is None
    assert blind.first is None and blind.rise is None
    # a run whose first loss is zero has nothing to rise from
    zero = LossWatch()
    assert zero.update(1, 0.0) is None and zero.update(2, 5.0) is None
