"""The training loop: iteration-based SGD with accumulation, AMP, DDP, checkpoints, logs."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dsod.config import Config, config_to_dict, save_config
from dsod.data.datasets import build_test_set, check_classes
from dsod.data.errors import DataError, summarize_problems
from dsod.data.loader import (DetectionDataset, IterationBatchSampler, collate_training,
                              ignore_stop_signals)
from dsod.engine import distributed as dist
from dsod.engine.bad_samples import BadSamples
from dsod.engine.builders import (build_loss, build_model, build_postprocessor,
                                  build_training_samples)
from dsod.engine.checkpoint import (CheckpointError, CheckpointManager,
                                   check_prediction_settings, load_model_weights)
from dsod.engine.evaluate import channels_last_for, evaluate_model
from dsod.engine.from_data import prepare_training_data
from dsod.engine.optim import build_optimizer, build_scheduler, schedule_warnings
from dsod.runtime.compiled import compile_for_training
from dsod.runtime.speed_paths import for_training
from dsod.precision import autocast_context, resolve_amp

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many steps in a row had a non-finite loss or gradient."""


@dataclass
class StepResult:
    loss: float
    loc_loss: float
    conf_loss: float
    skipped_samples: tuple[int, ...]  # data-set indices of unreadable samples replaced
    finite: bool


class Trainer:
    """Trains ``config``'s detector from scratch, writing everything to ``out_dir``:
    ``config.yaml``, ``checkpoints/``, ``log.jsonl``, ``tensorboard/`` and ``metrics.json``.
    """

    def __init__(self, config: Config, out_dir: str | Path, device: torch.device,
                 resume: bool = False, progress: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.device = device
        self.progress = progress and dist.is_main_process()
        self.amp, why = resolve_amp(config.train.amp, device)
        logger.info("precision: %s (%s)", {"none": "fp32"}.get(self.amp, self.amp), why)
        for line in schedule_warnings(config.solver):
            logger.warning("%s", line)
        torch.manual_seed(config.train.seed)
        # Class list and fitted priors, resolved from the training data before anything is
        # built from them; the resolved config is the one saved with the run.
        config, dataset = prepare_training_data(config)
        self.config = config
        solver, run = config.solver, config.train
        micro = solver.batch_per_step or solver.batch_size // dist.world_size()
        self.micro_batch = micro

        self.samples = build_training_samples(config, dataset)
        self.bad = BadSamples(dataset, run.max_bad_sample_fraction)
        self.bad.check_annotations(f"the training split {list(config.data.train)}")
        for line in summarize_problems(getattr(self.samples.dataset, "problems", [])):
            logger.warning("training data: %s", line)
        model = for_training(build_model(config), speed_paths=run.speed_paths,
                             memory_efficient=config.model.memory_efficient)
        if run.sync_bn and dist.is_distributed():
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        if device.type == "cuda":  # fixed input size: let cuDNN time and pick its kernels
            torch.backends.cudnn.benchmark = True
        self.channels_last = channels_last_for(run.channels_last, device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.criterion = build_loss(config)
        self.optimizer = build_optimizer(model, solver)
        self.scheduler = build_scheduler(self.optimizer, solver)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == "fp16")
        self.checkpoints = CheckpointManager(self.out_dir / "checkpoints", run.keep_checkpoints)
        self.step = 0
        self.best_map = -math.inf
        self.nonfinite_in_a_row = 0
        self._stop_signal: int | None = None
        if resume:
            self._resume()
        elif self.checkpoints.step_files():
            raise CheckpointError(
                f"{self.checkpoints.directory} already holds the checkpoints of a run (up to "
                f"step {self.checkpoints.step_files()[-1][0]}): pass --resume to continue it, "
                f"or give another --out for a new run")
        # What a training step calls: the model, compiled if asked, wrapped by DDP if distributed.
        network = compile_for_training(model) if run.compile else model
        self.ddp = (DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
                    if dist.is_distributed() else network)
        self.sampler = IterationBatchSampler(
            len(self.samples), solver.batch_size, micro, seed=run.seed, start_step=self.step,
            rank=dist.rank(), world_size=dist.world_size(), max_steps=solver.max_iter)
        self._test_set = None
        self._writer = None

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best_map": self.best_map,
            "torch_rng": torch.get_rng_state(),
            "config": config_to_dict(self.config),
            "class_names": list(self.samples.dataset.class_names),
        }

    def _resume(self) -> None:
        found = self.checkpoints.latest()
        if found is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch",
                           self.checkpoints.directory)
            return
        path, state = found
        check_prediction_settings(state.get("config"), self.config, f"checkpoint {path}")
        load_model_weights(self.model, state["model"], str(path))
        for name, part in (("optimizer", self.optimizer), ("scheduler", self.scheduler)):
            try:
                part.load_state_dict(state[name])
            except (KeyError, ValueError, RuntimeError, TypeError) as error:
                raise CheckpointError(
                    f"cannot resume from {path}: its {name} state does not fit this config "
                    f"({type(error).__name__}: {error}); resume with the run's own config "
                    f"(config.yaml in {self.out_dir}) or start a new run") from None
        scaler_state = state.get("scaler") or {}
        if self.scaler.is_enabled() and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        elif self.scaler.is_enabled() != bool(scaler_state):
            logger.warning("--resume: the run used train.amp=%s loss scaling differently; the "
                           "scaler starts afresh", self.amp)
        self.step = int(state["step"])
        self.best_map = float(state.get("best_map", -math.inf))
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        self._drop_log_after(self.step)
        logger.info("resumed from %s at step %d", path, self.step)

    def _drop_log_after(self, step: int) -> None:
        """Remove ``log.jsonl`` records of steps after ``step``: the resumed run logs them
        again, and curves would go back and forth."""
        log = self.out_dir / "log.jsonl"
        if not dist.is_main_process() or not log.is_file():
            return
        kept = []
        for line in log.read_text().splitlines(keepends=True):
            try:
                record_step = json.loads(line).get("step", 0)
            except (ValueError, AttributeError):
                record_step = 0  # keep what cannot be read
            if not isinstance(record_step, int) or record_step <= step:
                kept.append(line)
        log.write_text("".join(kept))

    def save_checkpoint(self) -> None:
        if dist.is_main_process():
            self.checkpoints.save(self.state_dict(), self.step)
        dist.barrier()

    # -- one step ------------------------------------------------------------------------
    def _all_finite(self, value: torch.Tensor) -> bool:
        flag = torch.isfinite(value.detach()).all().float()
        return bool(dist.all_reduce_mean(flag.to(self.device)).item() == 1.0)

    def train_step(self, batches) -> StepResult:
        """Forward and backward over this step's micro-batches, then one SGD step.

        A non-finite loss or gradient skips the update (the caller counts them)."""
        run = self.config.train
        self.optimizer.zero_grad(set_to_none=True)
        count = self.sampler.micro_batches_per_step
        totals = torch.zeros(3, device=self.device)
        skipped: list[int] = []
        finite = True
        for micro in range(count):
            images, target_offsets, target_labels, bad = next(batches)
            skipped.extend(bad)
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            target_offsets = target_offsets.to(self.device, non_blocking=True)
            target_labels = target_labels.to(self.device, non_blocking=True)
            sync = micro == count - 1 or not dist.is_distributed()
            with (self.ddp.no_sync() if not sync else contextlib.nullcontext()):
                with autocast_context(self.device, self.amp):
                    logits, offsets = self.ddp(images)
                losses = self.criterion(logits, offsets, target_offsets, target_labels)
                if not self._all_finite(losses["loss"]):
                    finite = False
                    continue
                self.scaler.scale(losses["loss"] / count).backward()
            totals += torch.stack([losses["loss"], losses["loc_loss"], losses["conf_loss"]]).detach() / count
        if finite:
            self.scaler.unscale_(self.optimizer)
            max_norm = self.config.solver.grad_clip or math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            finite = self.scaler.is_enabled() or self._all_finite(norm)
        if finite:
            self.scaler.step(self.optimizer)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()
        with warnings.catch_warnings():  # a skipped update still advances the schedule
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()
        self.step += 1
        totals = dist.all_reduce_mean(totals).tolist() if finite else [math.nan] * 3
        return StepResult(*totals, skipped_samples=tuple(skipped), finite=finite)

    # -- the loop ------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        workers = self.config.data.workers
        return DataLoader(self.samples, batch_sampler=self.sampler, num_workers=workers,
                          collate_fn=collate_training, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, prefetch_factor=4 if workers else None,
                          worker_init_fn=ignore_stop_signals)

    def _log(self, record: dict[str, Any]) -> None:
        if not dist.is_main_process():
            return
        # A skipped (non-finite) step logs its losses as null: strict JSON has no NaN.
        record = {key: None if isinstance(value, float) and not math.isfinite(value) else value
                  for key, value in record.items()}
        with open(self.out_dir / "log.jsonl", "a") as handle:
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

    def test_split(self) -> DetectionDataset:
        """The test split, read at the first call (:func:`build_test_set`, as the eval tool
        reads it); it must name the training classes in the same order
        (:func:`check_classes`)."""
        if self._test_set is None:
            test_set = build_test_set(self.config.data,
                                      self.config.train.max_bad_sample_fraction)
            check_classes(test_set, self.config.num_classes, self.samples.dataset.class_names,
                          f"the test split {list(self.config.data.test)}", "the training split")
            self._test_set = test_set
        return self._test_set

    def evaluate(self) -> dict[str, Any] | None:
        """Score the current model on the test split (main process returns the figures)."""
        c = self.config
        scores, _ = evaluate_model(
            self.model, self.test_split(), build_postprocessor(c), c.model.input_size,
            c.augment.mean_bgr, self.device, c.test.batch_size, c.data.workers, self.amp,
            self.channels_last, c.data.on_bad_sample, c.train.speed_paths)
        if scores is None:
            return None
        logger.info("step %d\n%s", self.step, scores.report())
        return scores.as_dict()

    def run(self) -> dict[str, Any] | None:
        """Train until ``solver.max_iter``; returns the final metrics (main process)."""
        c = self.config
        if dist.is_main_process():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(c, self.out_dir / "config.yaml")
        self.test_split()  # a test split that cannot be scored fails now, not after training
        batches = iter(self._loader())
        bar = tqdm(total=c.solver.max_iter, initial=self.step, desc="training", unit="it",
                   disable=not self.progress, dynamic_ncols=True)
        samples_per_step = self.micro_batch * self.sampler.micro_batches_per_step  # this process
        tic, seen = time.perf_counter(), 0
        if c.train.compile and self.step < c.solver.max_iter and dist.is_main_process():
            logger.info("train.compile: the first step compiles the network's forward and "
                        "backward (about 2 minutes for DSOD300 on a GPU)")
        with self._stop_on_signals():
            while self.step < c.solver.max_iter:
                try:
                    result = self.train_step(batches)
                except Exception:
                    if self._stop_signal is None:
                        raise
                    # The signal stopped the loader's workers too; the failed step had not
                    # changed the model yet: the last complete step is what is saved.
                    result = None
                if result is not None:
                    self.bad.add(result.skipped_samples)
                    seen += samples_per_step
                stop, seen_all = self._agreed(seen)
                if result is not None:
                    self._check_bad_samples(seen_all)
                    self._check_finite(result)
                    self._after_step(result, tic, bar, self.bad.count)
                    tic = time.perf_counter()
                if stop:
                    bar.close()
                    self.save_checkpoint()
                    logger.warning("stopped by signal %d at step %d; checkpoint saved in %s "
                                   "(continue with --resume)", self._stop_signal or 0,
                                   self.step, self.checkpoints.directory)
                    raise KeyboardInterrupt
        bar.close()
        self.save_checkpoint()
        metrics = self.evaluate()

        if dist.is_main_process():
            if metrics is not None:
                metrics = {"step": self.step, **metrics}
                (self.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
                self._log({"step": self.step, "mAP07": metrics["voc"]["mAP07"] or 0.0,
                           "mAP": metrics["voc"]["mAP"] or 0.0, "AP": metrics["coco"]["AP"]})
            self.checkpoints.save_named({**self.state_dict(), "metrics": json.dumps(metrics)},
                                        "final")
            if self._writer:
                self._writer.close()
        return metrics

    def _after_step(self, result: StepResult, tic: float, bar: tqdm, skipped_total: int) -> None:
        """Progress, logs, checkpoints and evaluations due after a step (``skipped_total``:
        the training images found unusable so far, distinct files)."""
        c = self.config
        images_per_step = c.solver.batch_size
        lr = self.optimizer.param_groups[0]["lr"]
        elapsed = time.perf_counter() - tic
        bar.update(1)
        bar.set_postfix(loss=f"{result.loss:.3f}", lr=f"{lr:.2e}",
                        img_s=f"{images_per_step / max(elapsed, 1e-9):.1f}")
        if self.step % c.train.log_every == 0 or self.step == c.solver.max_iter:
            self._log({"step": self.step, "loss": result.loss, "loc_loss": result.loc_loss,
                       "conf_loss": result.conf_loss, "lr": lr,
                       "images_per_s": images_per_step / max(elapsed, 1e-9),
                       "skipped_samples": skipped_total})
        if c.train.checkpoint_every and self.step % c.train.checkpoint_every == 0:
            self.save_checkpoint()
        if c.train.eval_every and self.step % c.train.eval_every == 0 \
                and self.step < c.solver.max_iter:
            self._periodic_eval()

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """Ctrl-C (SIGINT) and SIGTERM let the current step finish, then :meth:`run` saves a
        checkpoint and stops; a second signal stops at once. Only in the main thread, where
        Python delivers signals."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signum
            logger.warning("signal %d: finishing this step, then saving a checkpoint (send it "
                           "again to stop at once)", signum)

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _agreed(self, seen: int) -> tuple[bool, int]:
        """What all processes decide on together after a step: whether any received a stop
        signal, and the training samples seen, summed over processes; unreadable files
        found by any process are shared with all (:class:`BadSamples`)."""
        if not dist.is_distributed():
            return self._stop_signal is not None, seen
        local = torch.tensor([float(self._stop_signal is not None), self.bad.new_count(), seen],
                             dtype=torch.float64, device=self.device)
        total = (dist.all_reduce_mean(local) * dist.world_size()).tolist()
        if total[1] > 0:
            self.bad.share()
        return total[0] > 0, round(total[2])

    def _check_bad_samples(self, seen: int) -> None:
        """Stop (with a checkpoint) when, after at least one pass over the training set,
        more than ``train.max_bad_sample_fraction`` of its images could not be used
        (distinct files, over all processes, so that all stop together)."""
        if seen < len(self.samples) or not self.bad.over_limit():
            return
        self.save_checkpoint()
        raise DataError(
            f"{self.bad.describe()}, more than train.max_bad_sample_fraction = "
            f"{self.bad.limit} ({self.bad.kinds()}); the log names them and "
            f"tools/check_dataset.py lists every unreadable file. Fix or remove them (or raise "
            f"the limit), then continue with --resume from {self.checkpoints.directory}")

    def _periodic_eval(self) -> None:
        metrics = self.evaluate()
        if metrics is None:
            return
        value = metrics["voc"]["mAP07"] or 0.0
        self._log({"step": self.step, "mAP07": value, "mAP": metrics["voc"]["mAP"] or 0.0,
                   "AP": metrics["coco"]["AP"]})
        if value > self.best_map:
            self.best_map = value
            self.checkpoints.save_named(self.state_dict(), "best")

    def _check_finite(self, result: StepResult) -> None:
        if result.finite:
            self.nonfinite_in_a_row = 0
            return
        self.nonfinite_in_a_row += 1
        logger.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)",
                       self.step, self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= self.config.train.max_nonfinite_steps:
            self.save_checkpoint()
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} steps in a row had a non-finite loss or gradient "
                f"(step {self.step}); saved a checkpoint in {self.checkpoints.directory}. "
                f"Try a lower solver.lr or a longer solver.warmup_iters.")



def default_out_dir(config: Config) -> Path:
    """``outputs/<config name>`` unless ``train.out_dir`` says otherwise."""
    return Path(config.train.out_dir or Path("outputs") / config.name)


def train(config: Config, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True) -> dict[str, Any] | None:
    """Train ``config`` in this process (one of many under torchrun) and return the final
    metrics on the main process."""
    device = dist.init_from_environment()
    out = Path(out_dir) if out_dir else default_out_dir(config)
    handler = None
    if dist.is_main_process():
        logger.info("writing to %s", out.absolute())
        out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
    try:
        metrics = Trainer(config, out, device, resume=resume, progress=progress).run()
    finally:
        dist.cleanup()
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()
    if metrics is not None:
        def figure(value: float | None) -> str:  # None: no class had ground truth
            return "n/a" if value is None else f"{value:.4f}"
        print(f"final: VOC07 mAP {figure(metrics['voc']['mAP07'])}, area mAP "
              f"{figure(metrics['voc']['mAP'])}, COCO AP {figure(metrics['coco']['AP'])}; "
              f"outputs in {out}")
    return metrics
