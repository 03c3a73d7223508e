"""What a training run writes for people and plotting tools to read.

Owns ``log.jsonl`` (one JSON record per logged step or evaluation, non-finite numbers as
null), the TensorBoard scalars mirroring it, dropping the records a resumed run will log
again, ``train.log`` (the run's log messages), and the final figures: ``metrics.json`` and
the closing ``final: ...`` line. Only the main process writes; elsewhere every call is a
no-op.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dsod.engine import distributed as dist


class RunLog:
    """``out_dir/log.jsonl`` and ``out_dir/tensorboard/``, appended to record by record.

    The TensorBoard writer is opened at the first record (TensorBoard is optional at run
    time: without it only ``log.jsonl`` is written).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "log.jsonl"
        self._writer: Any = None  # None: not opened yet; False: TensorBoard is missing

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (it holds ``"step"``) to ``log.jsonl`` and its numbers but the
        step to TensorBoard."""
        if not dist.is_main_process():
            return
        # A skipped (non-finite) step logs its losses as null: strict JSON has no NaN.
        record = {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in record.items()
        }
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:  # TensorBoard is optional at run time
                self._writer = False
        if self._writer:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._writer.add_scalar(key, value, record["step"])

    def write_scores(self, step: int, metrics: Mapping[str, Any]) -> None:
        """The record of an evaluation: VOC07 and area mAP (0.0 when no class had ground
        truth) and COCO AP of :meth:`~dsod.evaluation.scores.Scores.as_dict`'s ``metrics``."""
        self.write(
            {
                "step": step,
                "mAP07": metrics["voc"]["mAP07"] or 0.0,
                "mAP": metrics["voc"]["mAP"] or 0.0,
                "AP": metrics["coco"]["AP"],
            }
        )

    def drop_after(self, step: int) -> None:
        """Remove ``log.jsonl`` records of steps after ``step``, the step a run starts from
        (its checkpoint's, or 0): the run logs them again, and curves would go back and
        forth. Records that cannot be read are kept."""
        if not dist.is_main_process() or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines(keepends=True):
            try:
                record_step = json.loads(line).get("step", 0)
            except (ValueError, AttributeError):
                record_step = 0  # keep what cannot be read
            if not isinstance(record_step, int) or record_step <= step:
                kept.append(line)
        self.path.write_text("".join(kept))

    def first_loss(self) -> tuple[int, float] | None:
        """The first ``(step, loss)`` that ``log.jsonl`` records with a finite loss (a
        resumed run's watch starts from it: :class:`dsod.engine.learning.LossWatch`); or
        None."""
        for record in self._records():
            loss, step = record.get("loss"), record.get("step")
            if isinstance(loss, (int, float)) and math.isfinite(loss) and isinstance(step, int):
                return step, float(loss)
        return None

    def loss_rise(self) -> dict[str, Any] | None:
        """The rise of the training loss the run was warned about
        (:class:`dsod.engine.learning.LossWatch`), as ``log.jsonl`` records it; or None."""
        found = None
        for record in self._records():
            if isinstance(record.get("loss_rise"), dict):
                found = record["loss_rise"]
        return found

    def _records(self) -> Iterator[dict[str, Any]]:
        """The records of ``log.jsonl`` that can be read, in order."""
        if not self.path.is_file():
            return
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def learning_check(self) -> dict[str, Any] | None:
        """The run's learning check (:mod:`dsod.engine.learning`), as ``log.jsonl`` records
        it (a resumed run's too), with the verdict at the end of the run under ``"end"``
        when there is one; or None."""
        found = None
        for record in self._records():
            if isinstance(record.get("learning_check"), dict):
                found = dict(record["learning_check"])
            if found and isinstance(record.get("learning_end"), dict):
                found["end"] = record["learning_end"]
        return found

    def write_final(self, step: int, metrics: dict[str, Any] | None) -> dict[str, Any] | None:
        """Save the last evaluation's figures and the run's learning check as
        ``metrics.json`` and log them; returns them with the step first (unchanged on other
        processes, or when ``None``)."""
        if metrics is None or not dist.is_main_process():
            return metrics
        metrics = {"step": step, **metrics, "learning": self.learning_check()}
        (self.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        self.write_scores(step, metrics)
        return metrics

    def close(self) -> None:
        if self._writer:
            self._writer.close()


@contextlib.contextmanager
def train_log_file(out_dir: Path) -> Iterator[None]:
    """Copy every log message of the run to ``out_dir/train.log`` (main process), with
    time, level and logger; the folder is made if needed."""
    if not dist.is_main_process():
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def budget_line(max_iter: int, batch_size: int, num_images: int, start_step: int = 0) -> str:
    """What the run will see: ``500 iterations of 16 images: 8,000 images, 27.4 passes
    over the 292 training images`` (and where a resumed run starts)."""
    images = max_iter * batch_size
    line = (
        f"{max_iter:,} iterations of {batch_size} images: {images:,} images, "
        f"{images / max(num_images, 1):.1f} passes over the {num_images:,} training images"
    )
    return line + (f"; resuming at iteration {start_step:,}" if start_step else "")


class RunTiming:
    """The run's remaining time, estimated once from its first steps here.

    :meth:`after_step` returns the estimate after ``steps`` steps of this process (the
    first step, which warms up, not timed), ``None`` before and after.
    """

    def __init__(
        self, start_step: int, max_iter: int, batch_size: int, eval_every: int, steps: int = 10
    ) -> None:
        self.start_step, self.max_iter, self.batch_size = start_step, max_iter, batch_size
        self.eval_every, self.steps = eval_every, steps
        self._first: float | None = None  # time at the end of the first step

    def after_step(self, step: int, now: float) -> str | None:
        done = step - self.start_step
        if done == 1:
            self._first = now
        if done != self.steps or self._first is None or step >= self.max_iter:
            return None
        seconds_per_step = (now - self._first) / (self.steps - 1)
        remaining = (self.max_iter - step) * seconds_per_step
        evaluations = (self.max_iter - step) // self.eval_every if self.eval_every else 0
        return (
            f"{self.batch_size / seconds_per_step:.1f} training images/s here: the "
            f"remaining {self.max_iter - step:,} iterations take about "
            f"{_duration(remaining)}, plus {evaluations + 1} evaluation"
            f"{'s' if evaluations else ''} of the test split"
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def final_line(metrics: Mapping[str, Any], out_dir: Path) -> str:
    """``final: VOC07 mAP 0.7712, area mAP 0.8011, COCO AP 0.4523; outputs in DIR``."""

    def figure(value: float | None) -> str:  # None: no class had ground truth
        return "n/a" if value is None else f"{value:.4f}"

    return (
        f"final: VOC07 mAP {figure(metrics['voc']['mAP07'])}, area mAP "
        f"{figure(metrics['voc']['mAP'])}, COCO AP {figure(metrics['coco']['AP'])}; "
        f"outputs in {out_dir}"
    )
