"""The training loop: iteration-based SGD with accumulation, AMP, DDP, checkpoints, logs.

:class:`Trainer` builds a run (``__init__``), takes one SGD step over a step's
micro-batches (:meth:`Trainer.train_step`) and loops steps to ``solver.max_iter``
(:meth:`Trainer.run`), evaluating and checkpointing on the way. The policies around the
loop live in modules of their own: what the run writes in :mod:`dsod.engine.run_log`, why
it stops early (signals, unreadable images, non-finite losses) and how DDP processes agree
on it in :mod:`dsod.engine.stopping`, what a checkpoint holds and how a run resumes from
it in :mod:`dsod.engine.train_state`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from dsod.config import Config, save_config
from dsod.data.datasets import build_test_set, check_classes
from dsod.data.errors import summarize_problems
from dsod.data.loader import (
    DetectionDataset,
    IterationBatchSampler,
    TrainingBatch,
    close_loader,
    collate_training,
    ignore_stop_signals,
)
from dsod.engine import distributed as dist
from dsod.engine.bad_samples import BadSamples
from dsod.engine.builders import build_loss, build_model, build_training_samples, head_input_scale
from dsod.engine.checkpoint import CheckpointManager
from dsod.engine.ema import WeightAverage, ema_decay
from dsod.engine.from_data import prepare_training_data
from dsod.engine.learning import LearningMonitor, LossWatch
from dsod.engine.optim import (
    build_optimizer,
    build_scheduler,
    scaled_lr,
    schedule_warnings,
    smaller_steps,
)
from dsod.engine.predict import predict_split
from dsod.engine.run_lock import claim_output_folder
from dsod.engine.run_log import RunLog, RunTiming, budget_line, final_line, train_log_file
from dsod.engine.step import StepResult, train_step
from dsod.engine.stopping import (
    NonFiniteLossError,
    NonFiniteSteps,
    StopSignals,
    agree,
    too_many_bad_samples,
)
from dsod.engine.train_state import TrainingState, refuse_to_overwrite, resume_latest
from dsod.evaluation.scores import score_detections
from dsod.models.heads import unit_rate_scale
from dsod.runtime.network import RunSettings, prepare_network
from dsod.runtime.precision import precision_name

__all__ = ["NonFiniteLossError", "StepResult", "Trainer", "default_out_dir", "train"]

logger = logging.getLogger(__name__)


class Trainer:
    """Trains ``config``'s detector from scratch, writing everything to ``out_dir``:
    ``config.yaml``, ``checkpoints/``, ``log.jsonl``, ``tensorboard/`` and ``metrics.json``.
    """

    def __init__(
        self,
        config: Config,
        out_dir: str | Path,
        device: torch.device,
        resume: bool = False,
        progress: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.device = device
        self.progress = progress and dist.is_main_process()
        self.settings = RunSettings.resolve(
            device, config.train.amp, config.train.channels_last, config.train.speed_paths
        )
        self.amp = self.settings.amp
        logger.info("precision: %s (%s)", precision_name(self.amp), self.settings.why)
        torch.manual_seed(config.train.seed)
        # Class list, run length and fitted priors, resolved from the training data before
        # anything is built from them; the resolved config is the one saved with the run.
        config, dataset = prepare_training_data(config)
        for line in schedule_warnings(config.solver):
            logger.warning("%s", line)
        self.config = config
        solver, run = config.solver, config.train
        self.micro_batch = solver.batch_per_step or solver.batch_size // dist.world_size()

        self.samples = build_training_samples(config, dataset)
        self.bad = BadSamples(dataset, run.max_bad_sample_fraction)
        self.bad.check_annotations(f"the training split {list(config.data.train)}")
        for line in summarize_problems(getattr(self.samples.dataset, "problems", [])):
            logger.warning("training data: %s", line)

        # What a training step calls: the model on the device, compiled if asked, wrapped
        # by DDP if distributed; network.model is the one the optimizer updates and saves.
        heads_without_bn = config.model.arch == "dsod" and not config.model.head_bn
        if heads_without_bn:
            lr = scaled_lr(solver)
            if config.model.l2norm_scale is None:
                why = f", so that a step of lr {lr:.3g} moves an output by about its gradient"
            else:
                rule = unit_rate_scale(lr)
                why = f" (model.l2norm_scale; the rule's for lr {lr:.3g} is {rule:.3g})"
            if solver.l2norm_lr is None:
                moves = "at the solver's rate it barely moves (solver.l2norm_lr: null)"
            else:
                moves = f"it learns at lr {solver.l2norm_lr:g} from there (solver.l2norm_lr)"
                if solver.l2norm_per_head:
                    moves += ", as one number a head (solver.l2norm_per_head)"
            logger.info(
                "heads without BN: their L2Norm scale starts at %.3g%s; %s",
                head_input_scale(config),
                why,
                moves,
            )
        self.network = prepare_network(
            build_model(config),
            self.settings,
            training=True,
            memory_efficient=config.model.memory_efficient,
            compile=run.compile,
            distributed=dist.is_distributed(),
            sync_bn=run.sync_bn,
        )
        model = self.network.model
        self.criterion = build_loss(config)
        optimizer = build_optimizer(model, solver)
        self.state = TrainingState(
            model,
            optimizer,
            build_scheduler(optimizer, solver),
            torch.amp.GradScaler(device.type, enabled=self.amp == "fp16"),
            ema=WeightAverage(model, ema_decay(solver.ema, solver.max_iter))
            if solver.ema > 0
            else None,
        )
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", run.keep_checkpoints)
        self.log = RunLog(self.out_dir)
        self.signals = StopSignals()
        advice = smaller_steps(solver, config.model.l2norm_scale if heads_without_bn else None)
        self.nonfinite = NonFiniteSteps(run.max_nonfinite_steps, advice)
        self.learning = LearningMonitor(solver.max_iter)
        self.loss_watch = LossWatch(advice=advice)
        if not resume:
            refuse_to_overwrite(self.checkpoints)
        resumed = resume and resume_latest(
            self.state, self.checkpoints, config, self.out_dir, self.amp
        )
        # The records past the step this run starts from are logged again (those of an
        # attempt that left no checkpoint, when it starts from scratch).
        self.log.drop_after(self.step)
        if resumed and dist.is_main_process():
            self.loss_watch = LossWatch.resumed(
                self.log.first_loss(), self.log.loss_rise(), advice
            )
        self.sampler = IterationBatchSampler(
            len(self.samples),
            solver.batch_size,
            self.micro_batch,
            seed=run.seed,
            start_step=self.step,
            rank=dist.rank(),
            world_size=dist.world_size(),
            max_steps=solver.max_iter,
        )
        self._test_set: DetectionDataset | None = None
        if dist.is_main_process():
            logger.info(
                "%s", budget_line(solver.max_iter, solver.batch_size, len(self.samples), self.step)
            )

    @property
    def model(self) -> nn.Module:
        """The model whose weights are trained and saved (not compiled, not DDP-wrapped)."""
        return self.state.model

    @property
    def step(self) -> int:
        """Steps taken so far, over the resumed runs too."""
        return self.state.step

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint of this run holds (:meth:`TrainingState.state_dict`)."""
        return self.state.state_dict(self.config, self.samples.dataset.class_names)

    def save_checkpoint(self) -> None:
        """``checkpoints/checkpoint_<step>.pth``, by the main process while the others wait."""
        if dist.is_main_process():
            self.checkpoints.save(self.state_dict(), self.step)
        dist.barrier()

    def train_step(self, batches: Iterator[TrainingBatch]) -> StepResult:
        """One SGD step (:func:`dsod.engine.step.train_step`) over the next
        ``sampler.micro_batches_per_step`` micro-batches of ``batches``; the result names
        the unreadable samples that were replaced in them."""
        skipped: list[int] = []
        count = self.sampler.micro_batches_per_step

        def micro_batches() -> Iterator[TrainingBatch]:
            for _ in range(count):
                batch = next(batches)
                skipped.extend(batch.skipped)
                yield batch

        result = train_step(
            self.network,
            self.criterion,
            self.state,
            micro_batches(),
            count,
            self.config.solver.grad_clip,
        )
        return dataclasses.replace(result, skipped_samples=tuple(skipped))

    # -- the loop ------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        """The training micro-batches of every remaining step, in order (:attr:`sampler`)."""
        workers = self.config.data.workers
        return DataLoader(
            self.samples,
            batch_sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_training,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
            worker_init_fn=ignore_stop_signals,
        )

    def run(self) -> dict[str, Any] | None:
        """Train until ``solver.max_iter``; returns the final metrics (main process).

        Raises:
            KeyboardInterrupt: a stop signal; the last complete step is saved.
            DataError: too many unreadable training images; a checkpoint is saved.
            NonFiniteLossError: too many non-finite steps in a row; a checkpoint is saved.
        """
        c = self.config
        if dist.is_main_process():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(c, self.out_dir / "config.yaml")
        self.test_split()  # a test split that cannot be scored fails now, not after training
        bar = tqdm(
            total=c.solver.max_iter,
            initial=self.step,
            desc="training",
            unit="it",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        batches = iter(self._loader())
        try:
            self._train_steps(batches, bar)
        finally:
            close_loader(batches)
        bar.close()
        end = self.learning.finish(self.step) if dist.is_main_process() else None
        if end is not None:
            self.log.write({"step": self.step, "learning_end": end})
        self.save_checkpoint()
        metrics = self.log.write_final(self.step, self.score_test_split())
        if dist.is_main_process():
            self.checkpoints.save_named(
                {**self.state_dict(), "metrics": json.dumps(metrics)}, "final"
            )
        self.log.close()
        return metrics

    def _train_steps(self, batches: Iterator[TrainingBatch], bar: tqdm) -> None:
        """Steps until ``solver.max_iter``, or until a stop signal or too many bad steps
        (the exceptions of :meth:`run`)."""
        c = self.config
        samples_per_step = self.micro_batch * self.sampler.micro_batches_per_step  # this process
        tic, seen = time.perf_counter(), 0
        timing = RunTiming(self.step, c.solver.max_iter, c.solver.batch_size, c.train.eval_every)
        if c.train.compile and self.step < c.solver.max_iter and dist.is_main_process():
            logger.info(
                "train.compile: the first step compiles the network's forward and "
                "backward (about 2 minutes for DSOD300 on a GPU)"
            )
        with self.signals.caught():
            while self.step < c.solver.max_iter:
                try:
                    result: StepResult | None = self.train_step(batches)
                except Exception:
                    if self.signals.received is None:
                        raise
                    # The signal stopped the loader's workers too; the failed step had not
                    # changed the model yet: the last complete step is what is saved.
                    result = None
                if result is not None:
                    if result.finite and self.state.ema is not None:
                        self.state.ema.update(self.model)
                    self.bad.add(result.skipped_samples)
                    seen += samples_per_step
                stop, seen_all = agree(
                    self.signals.received is not None, self.bad, seen, self.device
                )
                if result is not None:
                    error = too_many_bad_samples(
                        self.bad, seen_all, len(self.samples), self.checkpoints.directory
                    ) or self.nonfinite.after_step(
                        result.finite, self.step, self.checkpoints.directory
                    )
                    if error is not None:
                        self.save_checkpoint()
                        raise error
                    self._after_step(result, tic, bar)
                    tic = time.perf_counter()
                    estimate = timing.after_step(self.step, tic)
                    if estimate and dist.is_main_process():
                        logger.info("%s", estimate)
                if stop:
                    bar.close()
                    self.save_checkpoint()
                    logger.warning(
                        "stopped by signal %d at step %d; checkpoint saved in %s "
                        "(continue with --resume)",
                        self.signals.received or 0,
                        self.step,
                        self.checkpoints.directory,
                    )
                    raise KeyboardInterrupt

    def _after_step(self, result: StepResult, tic: float, bar: tqdm) -> None:
        """Progress, logs, checkpoints and evaluations due after a step (the step began at
        ``tic``)."""
        c = self.config
        images_per_step = c.solver.batch_size
        lr = self.state.optimizer.param_groups[0]["lr"]
        elapsed = time.perf_counter() - tic
        bar.update(1)
        bar.set_postfix(
            loss=f"{result.loss:.3f}",
            lr=f"{lr:.2e}",
            img_s=f"{images_per_step / max(elapsed, 1e-9):.1f}",
        )
        self.learning.add(result.signal)
        if self.step % c.train.log_every == 0 or self.step == c.solver.max_iter:
            # skipped_samples: the training images found unusable so far, distinct files.
            self.log.write(
                {
                    "step": self.step,
                    "loss": result.loss,
                    "loc_loss": result.loc_loss,
                    "conf_loss": result.conf_loss,
                    "lr": lr,
                    "grad_norm": result.grad_norm,
                    "images_per_s": images_per_step / max(elapsed, 1e-9),
                    "skipped_samples": self.bad.count,
                    **self.learning.record(),
                }
            )
            if dist.is_main_process() and self.loss_watch.update(self.step, result.loss):
                self.log.write({"step": self.step, "loss_rise": self.loss_watch.rise})
        verdict = self.learning.check(self.step) if dist.is_main_process() else None
        if verdict is not None:
            self.log.write({"step": self.step, "learning_check": verdict})
        if c.train.checkpoint_every and self.step % c.train.checkpoint_every == 0:
            self.save_checkpoint()
        if (
            c.train.eval_every
            and self.step % c.train.eval_every == 0
            and self.step < c.solver.max_iter
        ):
            self._periodic_eval()

    # -- evaluation ----------------------------------------------------------------------
    def test_split(self) -> DetectionDataset:
        """The test split, read at the first call (:func:`build_test_set`, as the eval tool
        reads it); it must name the training classes in the same order
        (:func:`check_classes`)."""
        if self._test_set is None:
            test_set = build_test_set(self.config.data, self.config.train.max_bad_sample_fraction)
            check_classes(
                test_set,
                self.config.num_object_classes,
                self.samples.dataset.class_names,
                f"the test split {list(self.config.data.test)}",
                "the training split",
            )
            self._test_set = test_set
        return self._test_set

    def score_test_split(self) -> dict[str, Any] | None:
        """Predict the test split with the current model (:func:`predict_split`, as
        ``tools/eval.py`` does) and score it (:func:`score_detections`); the main process
        returns the figures (:meth:`Scores.as_dict`), the others None."""
        test_set = self.test_split()
        detections, _ = predict_split(self.state.eval_model, test_set, self.config, self.settings)
        if not dist.is_main_process():
            return None
        scores = score_detections(test_set, detections)
        logger.info("step %d\n%s", self.step, scores.report())
        return scores.as_dict()

    def _periodic_eval(self) -> None:
        """Evaluate, log the figures, and save ``best.pth`` when VOC07 mAP is the best yet."""
        metrics = self.score_test_split()
        if metrics is None:
            return
        self.log.write_scores(self.step, metrics)
        value = metrics["voc"]["mAP07"] or 0.0
        if value > self.state.best_map:
            self.state.best_map = value
            self.checkpoints.save_named(self.state_dict(), "best")


def default_out_dir(config: Config) -> Path:
    """``outputs/<config name>`` unless ``train.out_dir`` says otherwise."""
    return Path(config.train.out_dir or Path("outputs") / config.name)


def train(
    config: Config, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True
) -> dict[str, Any] | None:
    """Train ``config`` in this process (one of many under torchrun) and return the final
    metrics on the main process."""
    device = dist.init_from_environment()
    out = Path(out_dir) if out_dir else default_out_dir(config)
    if dist.is_main_process():
        logger.info("writing to %s", out.absolute())
    with claim_output_folder(out, dist.is_main_process()), train_log_file(out):
        try:
            metrics = Trainer(config, out, device, resume=resume, progress=progress).run()
        finally:
            dist.cleanup()
    if metrics is not None:
        print(final_line(metrics, out))
    return metrics
