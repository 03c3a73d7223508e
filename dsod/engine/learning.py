"""Whether a training run is learning: a signal the mined loss cannot give, and its warning.

The MultiBox loss mines the hardest negatives, so it can sit at the same value while the
model improves (the mined negatives get harder) and while it learns nothing. It also
falls for a model that learns only where objects usually are and how large they are,
which on a set of one large, centred object an image is most of the way to a good score.
What such a model cannot do is tell *this image's* objects from another image's.

The signal, the **agreement**: pair each image of a batch with every other one and ask
the model, looking at this image, to decide between the two images' annotations where
they differ:

* *where the objects are*: a prior matched to an object of this image but background for
  the other (set ``A``) against one that is the other way round (``B``). The model decides
  for this image when it gives the ``A`` prior the higher object score
  (``1 - p(background)``); over all such pairs this is the AUC of ``A`` against ``B``.
* *what the boxes are*: a prior matched in both images, whose predicted offsets are closer
  (smooth L1, as the loss measures them) to this image's box than to the other's.

Each comparison counts 1 when the model decides for this image and 1/2 for a tie; a
pair's rate is the mean of its two rates (either one where the other has no comparison),
and an image's agreement the mean of its pairs' rates. A model that does not look at the
image, whatever it has learnt about usual positions and sizes, decides for either image
equally often: 0.5 (exactly, for images with the same predictions where every pair
compares, as each decision of image ``i`` against ``j`` then has its mirror in ``j``'s
against ``i``). Labels that do not belong to their images keep it at 0.5 too. A model
that finds each image's objects takes it towards 1. Every other image of the forward
batch (up to :data:`MAX_PARTNERS`), not one, so that which image an image happens to be
paired with adds less noise: on a set of one large object an image the check's standard
error fell by a third, from the same batches (docs/RESULTS.md, "The learning signal").

:class:`LearningMonitor` averages it between log records and, once a stated fraction of
the run has passed, checks it once: the run is learning when its agreement over the last
steps lies above 0.5 by at least :data:`SIGNIFICANCE` standard errors and by at least
:data:`MIN_MARGIN`, and is warned about otherwise. The standard error comes from the
spread of the images' values, so the check needs no threshold tuned to a data set. The
images of a batch share their pairs, so their values are not independent, and the error
counted as if they were overstates the mean's: on a set of one large object an image, the
spread of the steps' means gave a third of it for a run that learns and a fifth for
shuffled labels (docs/RESULTS.md, "The learning signal"). The check keeps the larger one:
it errs towards warning, and shuffled labels that the model has begun to memorise lie
significantly, if little, above chance (0.514 at a third of the run, where one that
learns was at 0.54; on sets of many small objects 0.50 against 0.9), which
:data:`MIN_MARGIN` and the larger error keep below the bar. The more passes over the
images before the check, the further memorising lifts them: on 80 images seen 17 times
they reached the bar (docs/RESULTS.md, "Sets made from the shared ones").
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dsod.engine.optim import smaller_steps

__all__ = [
    "SIGNIFICANCE",
    "MIN_MARGIN",
    "CHECK_FRACTION",
    "MIN_CHECK_STEP",
    "MAX_PARTNERS",
    "RISE_FACTOR",
    "LearningMonitor",
    "LossWatch",
    "SignalSums",
    "agreement",
    "pair_auc",
    "partner_shifts",
    "signal_sums",
]

logger = logging.getLogger(__name__)

SIGNIFICANCE = 3.0
"""How many standard errors above 0.5 the agreement must lie at the check."""

MIN_MARGIN = 0.02
"""How far above 0.5 it must lie at least, however many images the check saw
(docs/RESULTS.md, "The learning signal": runs on shuffled labels stayed within it)."""

MAX_PARTNERS = 16
"""How many other images of its batch each image is compared with at most."""

CHECK_FRACTION = 1 / 3
"""The fraction of ``solver.max_iter`` after which the agreement is checked, once."""

MIN_CHECK_STEP = 20
"""Runs whose check would come before this step are too short to tell, and not checked."""

RISE_FACTOR = 1.5
"""How many times its first logged value the logged training loss may reach before the run
is warned that it diverges (docs/RESULTS.md, "A start that learns everywhere": the runs
that ended well stayed within 1.02 times it, the diverging ones reached 2.9 and more)."""


def pair_auc(scores: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Per row, the chance that a prior of ``first`` scores above a prior of ``second``.

    Args:
        scores: ``[B, P]`` float scores.
        first, second: ``[B, P]`` bool masks of the two prior sets of each row.

    Returns:
        ``[B]`` float64: the fraction of (first, second) pairs in which the first prior's
        score is higher, ties counting half; NaN for a row where either set is empty.
    """
    scores = scores.detach().float().contiguous()
    # Each row's scores of `second` in order, the other priors pushed past them (+inf is
    # never below a finite score, nor equal to it).
    others = torch.where(second, scores, torch.full_like(scores, math.inf))
    others = others.sort(1).values.contiguous()
    below = torch.searchsorted(others, scores, right=False)
    not_above = torch.searchsorted(others, scores, right=True)
    wins = ((below + 0.5 * (not_above - below)).double() * first).sum(1)
    pairs = first.sum(1).double() * second.sum(1).double()
    return torch.where(pairs > 0, wins / pairs.clamp(min=1), torch.full_like(wins, math.nan))


def partner_shifts(count: int) -> list[int]:
    """The shifts ``k`` for which image ``i`` of a batch of ``count`` is compared with
    image ``(i + k) % count``: every other image up to :data:`MAX_PARTNERS`, then the
    nearest ``MAX_PARTNERS / 2`` on either side, so that the cost stays linear in the batch
    and each pair ``(i, j)`` still comes with its mirror ``(j, i)`` (shift ``count - k``).
    """
    if count - 1 <= MAX_PARTNERS:
        return list(range(1, count))
    half = MAX_PARTNERS // 2
    return [*range(1, half + 1), *range(count - half, count)]


def agreement(
    logits: torch.Tensor, offsets: torch.Tensor, target_offsets: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The agreement of each image with its own annotation against every other image's.

    Args:
        logits: ``[B, P, C+1]`` raw class scores, class 0 background.
        offsets: ``[B, P, 4]`` predicted box offsets.
        target_offsets: ``[B, P, 4]`` encoded ground truth (meaningful where matched).
        labels: ``[B, P]`` int target labels: ``> 0`` matched to an object, ``0``
            background, ``< 0`` ignored (as the loss receives them).

    Returns:
        ``[B]`` float64 in ``[0, 1]``: per image, the mean of the pairs' rates (a pair's
        rate: the mean of its two decision rates, or the one it has) over its partners
        (:func:`partner_shifts`: every other image of the batch, up to
        :data:`MAX_PARTNERS`) that have a comparison; NaN for an image with none (no
        objects of its own, or none where a partner's annotation differs), and for every
        image of a batch of one.
    """
    count = logits.shape[0]
    if count < 2:
        return torch.full((count,), math.nan, dtype=torch.float64)
    # Only the priors matched in some image of the batch take part in a comparison.
    used = (labels > 0).any(0)
    matched, background = labels[:, used] > 0, labels[:, used] == 0
    # -log p(background): monotone in 1 - p(background), and finite where p is near 1.
    scores = -torch.log_softmax(logits.detach()[:, used].float(), -1)[..., 0]
    predicted = offsets.detach()[:, used].float()
    targets = target_offsets[:, used].float()

    def box_error(boxes: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(predicted, boxes, reduction="none").sum(-1)

    own_error = box_error(targets)
    rates = []
    for shift in partner_shifts(count):  # image i against image i + shift (cyclically)
        other_matched, other_background = matched.roll(-shift, 0), background.roll(-shift, 0)
        where = pair_auc(scores, matched & other_background, other_matched & background)
        both = matched & other_matched
        other_error = box_error(targets.roll(-shift, 0))
        decided = (own_error < other_error).double() + 0.5 * (own_error == other_error).double()
        pairs = both.sum(1).double()
        boxes = torch.where(
            pairs > 0,
            (decided * both).sum(1) / pairs.clamp(min=1),
            torch.full_like(pairs, math.nan),
        )
        rates.append(torch.stack([where, boxes], 1).nanmean(1))
    return torch.stack(rates, 1).nanmean(1)


@dataclass
class SignalSums:
    """Sums over the images that have an agreement: of the values, of their squares, and
    their number."""

    total: float = 0.0
    squares: float = 0.0
    images: float = 0.0

    def add(self, other: SignalSums) -> None:
        self.total += other.total
        self.squares += other.squares
        self.images += other.images

    def mean(self) -> float:
        """The mean agreement; NaN when no image counted."""
        return self.total / self.images if self.images > 0 else math.nan

    def standard_error(self) -> float:
        """The standard error of :meth:`mean` from the images' spread; NaN for fewer than
        two images."""
        if self.images < 2:
            return math.nan
        mean = self.mean()
        variance = max(0.0, self.squares / self.images - mean * mean)
        return math.sqrt(variance * self.images / (self.images - 1) / self.images)


@torch.no_grad()
def signal_sums(
    logits: torch.Tensor, offsets: torch.Tensor, target_offsets: torch.Tensor, labels: torch.Tensor
) -> SignalSums:
    """:func:`agreement` of one batch, summed over the images that have one."""
    values = agreement(logits, offsets, target_offsets, labels)
    values = values[~values.isnan()]
    return SignalSums(float(values.sum()), float(values.square().sum()), float(values.numel()))


class LearningMonitor:
    """Averages the agreement between log records and warns once when the run is not
    learning.

    Call :meth:`add` after every step with that step's :class:`SignalSums`, :meth:`record`
    when a log record is written (the mean since the last record), and :meth:`check` after
    every step (warns once, at ``check_step``).
    """

    def __init__(
        self,
        max_iter: int,
        check_fraction: float = CHECK_FRACTION,
        significance: float = SIGNIFICANCE,
        min_margin: float = MIN_MARGIN,
    ) -> None:
        self.check_step = max(1, math.ceil(check_fraction * max_iter))
        self.significance, self.min_margin = significance, min_margin
        self._since_record = SignalSums()
        self._window: list[SignalSums] = []  # the last steps, for the check
        self._window_steps = max(1, min(50, self.check_step // 2))
        self.verdict: dict[str, Any] | None = None

    def add(self, sums: SignalSums) -> None:
        self._since_record.add(sums)
        self._window.append(sums)
        del self._window[: -self._window_steps]

    def record(self) -> dict[str, float]:
        """``{"agreement": mean since the last call}``, for the log record."""
        mean = self._since_record.mean()
        self._since_record = SignalSums()
        return {"agreement": mean}

    def recent(self) -> SignalSums:
        """The sums over the last steps (at most 50, at most half the check step)."""
        total = SignalSums()
        for sums in self._window:
            total.add(sums)
        return total

    def _verdict(self, step: int) -> dict[str, Any]:
        """The agreement over the last steps against chance, as the check records it."""
        sums = self.recent()
        value, error = sums.mean(), sums.standard_error()
        needed = max(self.significance * error, self.min_margin)
        learning = math.isnan(value) or math.isnan(error) or value - 0.5 >= needed
        return {
            "step": step,
            "agreement": value,
            "standard_error": error,
            "needed": 0.5 + needed,
            "images": int(sums.images),
            "learning": learning,
        }

    def check(self, step: int) -> dict[str, Any] | None:
        """At ``check_step``: the verdict (also kept in :attr:`verdict`), warned about when
        the run is not learning; ``None`` at every other step, and always for a run too
        short to tell (``check_step`` below :data:`MIN_CHECK_STEP`)."""
        if step != self.check_step or self.check_step < MIN_CHECK_STEP:
            return None
        self.verdict = verdict = self._verdict(step)
        if not verdict["learning"]:
            logger.warning(
                "the model is not learning to find the objects: after %d iterations, where "
                "an image's annotation and another image's disagree, it decides for the "
                "image's own no more often than chance (agreement %.3f +- %.3f over its last "
                "%d images; 0.5 is chance, a run that learns is above %.3f by now). Check "
                "that the annotations belong to their images (tools/check_dataset.py); if "
                "they do, try a lower learning rate (solver.lr) or a longer run "
                "(solver.max_iter); a model.l2norm_scale set below the rule's (logged at "
                "the start) makes the heads' steps small and the start slow where "
                "solver.l2norm_lr does not let it grow. Sets of about "
                "one large object an image can start slowly: the check is repeated at the "
                "end of the run",
                step,
                verdict["agreement"],
                verdict["standard_error"],
                verdict["images"],
                verdict["needed"],
            )
        return verdict

    def finish(self, step: int) -> dict[str, Any] | None:
        """The same verdict at the end of the run, logged beside the check's (a set of few,
        large objects can start slowly and learn later); ``None`` when the run was not
        checked."""
        if self.verdict is None or step <= self.check_step:
            return None
        end = self._verdict(step)
        first = self.verdict["learning"]
        if end["learning"] and not first:
            outcome = "the run did learn, later than the check expected"
        elif end["learning"]:
            outcome = "learning"
        elif first:
            outcome = "it has fallen back to chance: the model no longer tells images apart"
        else:
            outcome = "still not learning"
        # Warned once: only news (a run that learnt and no longer does) is a warning.
        log = logger.warning if first and not end["learning"] else logger.info
        log(
            "learning at the end (step %d): agreement %.3f +- %.3f over the last %d images "
            "(0.5 is chance; %.3f at the check): %s",
            step,
            end["agreement"],
            end["standard_error"],
            end["images"],
            self.verdict["agreement"],
            outcome,
        )
        return end


class LossWatch:
    """Warns once when the training loss rises to :data:`RISE_FACTOR` times its first
    logged value: the steps are too large for the start and the run diverges. The
    agreement can miss it, since such a run has often learnt something before it does.

    It compares the losses the log records (one step's, every ``train.log_every`` steps;
    :data:`RISE_FACTOR` was set from logs at the default of 20), so a run that diverges
    before its first logged step is not warned about. Call :meth:`update` with each logged
    loss; a resumed run starts from :meth:`resumed`. The warning ends with ``advice``
    (:func:`dsod.engine.optim.smaller_steps` of the run's solver).
    """

    def __init__(self, factor: float = RISE_FACTOR, advice: str = smaller_steps()) -> None:
        self.factor = factor
        self.advice = advice
        self.first: tuple[int, float] | None = None
        self.rise: dict[str, Any] | None = None
        self.off = False

    @classmethod
    def resumed(
        cls,
        first: tuple[int, float] | None,
        rise: dict[str, Any] | None,
        advice: str = smaller_steps(),
    ) -> LossWatch:
        """The watch of a run resumed from a checkpoint: ``first`` its log's first logged
        ``(step, loss)``, ``rise`` the rise it already warned about (both
        :class:`dsod.engine.run_log.RunLog`'s). Without a first loss it stays off: a loss
        logged late in the run is no measure of its start."""
        watch = cls(advice=advice)
        watch.first, watch.rise = first, rise
        watch.off = first is None
        return watch

    def update(self, step: int, loss: float) -> dict[str, Any] | None:
        """The rise (also kept in :attr:`rise`) at the first logged loss that reaches
        ``factor`` times the first one, warned about; ``None`` otherwise: before and after
        it, for a watch that is off, and for a non-finite loss (such steps are skipped and
        counted elsewhere)."""
        if self.off or not math.isfinite(loss):
            return None
        if self.first is None:
            self.first = (step, loss)
            return None
        first_step, first_loss = self.first
        if self.rise is not None or first_loss <= 0 or loss < self.factor * first_loss:
            return None
        self.rise = {
            "step": step,
            "loss": loss,
            "first_step": first_step,
            "first_loss": first_loss,
            "ratio": loss / first_loss,
        }
        logger.warning(
            "the training loss is rising: %.3f at step %d, %.1f times its first logged value "
            "(%.3f at step %d). The steps are too large for this start and the run diverges: "
            "%s",
            loss,
            step,
            self.rise["ratio"],
            first_loss,
            first_step,
            self.advice,
        )
        return self.rise
