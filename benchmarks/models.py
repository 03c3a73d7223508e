"""Network speed: inference latency and throughput, training images per second, FLOPs and
the machine's convolution ceiling."""

from __future__ import annotations

import dataclasses
import gc
import math
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import Counts, median, time_runs
from dsod.box_coder import BoxCoder
from dsod.config import Config
from dsod.data.loader import TrainingBatch
from dsod.engine.builders import build_loss, build_model, build_priors
from dsod.engine.optim import build_optimizer, build_scheduler
from dsod.engine.step import train_step
from dsod.engine.train_state import TrainingState
from dsod.matching import TargetEncoder
from dsod.models.detector import count_parameters
from dsod.runtime.cuda_graph import CUDAGraphForward
from dsod.runtime.network import Network, RunSettings, prepare_network
from dsod.runtime.precision import amp_setting, autocast_context

# Pixel values of the network input: BGR minus the mean, so roughly +-128; noise of this
# spread exercises the same kernels as real images.
_IMAGE_STD = 60.0


def prepare_model(
    config: Config,
    device: torch.device,
    channels_last: bool,
    for_inference: bool = False,
    compile: bool = False,
    precision: str = "fp32",
) -> Network:
    """The config's detector, randomly initialised, prepared as the trainer prepares it
    (:func:`~dsod.runtime.network.prepare_network` with ``training``: the config's speed
    paths and ``model.memory_efficient``) or, with ``for_inference``, as
    :class:`dsod.inference.Detector` runs it under ``precision`` (eval mode, BNs folded,
    weights stored in the autocast dtype); ``compile`` as ``train.compile`` /
    ``Detector(compile=True)``. ``network(images)`` runs it in that precision."""
    settings = RunSettings(
        torch.device(device), amp_setting(precision), channels_last, config.train.speed_paths
    )
    return prepare_network(
        build_model(config),
        settings,
        training=not for_inference,
        memory_efficient=config.model.memory_efficient,
        compile=compile,
    )


def random_images(
    batch: int, size: int, device: torch.device, channels_last: bool, seed: int = 0
) -> torch.Tensor:
    """``[batch, 3, size, size]`` network inputs (noise at the scale of mean-subtracted BGR)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator) * _IMAGE_STD
    images = images.to(device)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def random_targets(config: Config, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real training targets for ``batch`` images: 1-6 random boxes each (5%-50% of the side,
    random classes), matched to the config's priors by :class:`TargetEncoder`.

    Returns ``(offsets [B, P, 4], labels [B, P])`` on the CPU.
    """
    generator = torch.Generator().manual_seed(seed)
    encoder = TargetEncoder(
        build_priors(config)(),
        BoxCoder(config.priors.variances),
        config.loss.match_iou,
        config.loss.neg_iou,
    )
    all_offsets, all_labels = [], []
    for _ in range(batch):
        count = int(torch.randint(1, 7, (1,), generator=generator))
        centre = torch.rand(count, 2, generator=generator) * 0.6 + 0.2
        half = (torch.rand(count, 2, generator=generator) * 0.45 + 0.05) / 2
        boxes = torch.cat([centre - half, centre + half], 1).clamp(0.0, 1.0)
        labels = torch.randint(1, config.num_classes, (count,), generator=generator)
        offsets, prior_labels = encoder(boxes, labels)
        all_offsets.append(offsets)
        all_labels.append(prior_labels)
    return torch.stack(all_offsets), torch.stack(all_labels)


class TrainingStep:
    """One training step of the config's detector on a fixed batch, taken as the trainer
    takes it (:func:`dsod.engine.step.train_step`: forward in the chosen precision, MultiBox
    loss, backward through a GradScaler for fp16, gradient norm, SGD with the config's
    momentum and weight-decay groups, the learning-rate schedule from its first, warm-up
    rate).

    Calling it runs one step and returns the loss.
    """

    def __init__(
        self,
        config: Config,
        device: torch.device,
        batch: int,
        precision: str,
        channels_last: bool,
        seed: int = 0,
        compile: bool = False,
    ) -> None:
        torch.manual_seed(seed)
        self.network = prepare_model(
            config, device, channels_last, compile=compile, precision=precision
        )
        self.model = self.network.model
        self.optimizer = build_optimizer(self.model, config.solver)
        # A run length left to the data (None) is set when a run reads it; any length
        # serves a benchmark's few steps.
        solver = (
            config.solver
            if config.solver.max_iter is not None
            else dataclasses.replace(config.solver, max_iter=1000)
        )
        self.state = TrainingState(
            self.model,
            self.optimizer,
            build_scheduler(self.optimizer, solver),
            torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        )
        self.criterion = build_loss(config)
        self.grad_clip = config.solver.grad_clip
        offsets, labels = random_targets(config, batch, seed)
        self.batch = TrainingBatch(
            random_images(batch, config.model.input_size, device, channels_last, seed),
            offsets.to(device),
            labels.to(device),
        )

    def __call__(self) -> float:
        return train_step(
            self.network, self.criterion, self.state, [self.batch], 1, self.grad_clip
        ).loss


def inference_metrics(
    model: Network,
    input_size: int,
    device: torch.device,
    precision: str,
    counts: Counts,
    channels_last: bool,
) -> dict[str, float]:
    """Batch-1 latency (median and best, ms) and batch throughput (images/s) of raw network
    outputs of a network prepared for inference (:func:`prepare_model`) under
    ``torch.inference_mode``. On CUDA also both replayed from a
    CUDA graph (:class:`CUDAGraphForward`; keys ending in ``_graph``), which removes the
    host's kernel-launch time, and the largest difference between the two paths' outputs."""
    single = random_images(1, input_size, device, channels_last)
    batch = random_images(counts.batch, input_size, device, channels_last, seed=1)
    with torch.inference_mode():
        latency = time_runs(lambda: model(single), counts.latency_runs, counts.warmup, device)
        throughput = time_runs(
            lambda: model(batch), counts.throughput_runs, min(counts.warmup, 1), device
        )
    out = {
        "latency_ms_b1": median(latency) * 1e3,
        "latency_ms_b1_best": min(latency) * 1e3,
        "throughput_img_s": counts.batch / median(throughput),
        "throughput_batch": counts.batch,
    }
    if device.type == "cuda":
        with torch.inference_mode():
            eager_outputs = model(single)
        graphed = CUDAGraphForward(model.module, autocast_dtype=model.settings.dtype)
        latency = time_runs(lambda: graphed(single), counts.latency_runs, counts.warmup, device)
        throughput = time_runs(
            lambda: graphed(batch), counts.throughput_runs, min(counts.warmup, 1), device
        )
        difference = max(
            float((a.float() - b.float()).abs().max())
            for a, b in zip(graphed(single), eager_outputs)
        )
        out.update(
            {
                "latency_ms_b1_graph": median(latency) * 1e3,
                "latency_ms_b1_graph_best": min(latency) * 1e3,
                "throughput_img_s_graph": counts.batch / median(throughput),
                "graph_max_abs_difference": difference,
            }
        )
    return out


def training_metrics(
    config: Config,
    device: torch.device,
    precision: str,
    counts: Counts,
    channels_last: bool,
    batch: int | None = None,
    steps: int | None = None,
    compile: bool = False,
) -> dict[str, Any]:
    """Training images per second at ``batch`` (default ``counts.batch``; median of ``steps``,
    default ``counts.train_steps``, after one warm-up step, which allocates the momentum
    buffers and, with ``compile``, compiles), on a freshly initialised model."""
    batch = batch or counts.batch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = TrainingStep(config, device, batch, precision, channels_last, compile=compile)
    losses: list[float] = []
    times = time_runs(lambda: losses.append(step()), steps or counts.train_steps, 1, device)
    loss = losses[-1]
    out = {
        "train_img_s": batch / median(times),
        "step_s": median(times),
        "batch": batch,
        "last_loss": loss,
        "finite": math.isfinite(loss),
    }
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / float(1 << 30)
    return out


def training_sweep(
    config: Config,
    device: torch.device,
    precision: str,
    counts: Counts,
    channels_last: bool,
    compile: bool = False,
) -> list[dict[str, Any]]:
    """Training images per second at each of ``counts.train_batches`` in increasing order,
    stopping at the first batch that fails, as when it runs out of memory (its row holds
    the error instead of figures)."""
    rows: list[dict[str, Any]] = []
    for batch in sorted(counts.train_batches):
        if device.type == "cuda":
            torch.cuda.empty_cache()
        try:
            rows.append(
                training_metrics(
                    config,
                    device,
                    precision,
                    counts,
                    channels_last,
                    batch,
                    counts.sweep_steps,
                    compile,
                )
            )
        except RuntimeError as error:  # torch.cuda.OutOfMemoryError, or cuDNN out of workspace
            rows.append({"batch": batch, "error": f"{type(error).__name__}: {str(error)[:300]}"})
            break
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def forward_gflops(config: Config) -> float:
    """GFLOPs (10^9, a multiply-add counted as two) of one forward pass of one image at the
    config's input size, by ``torch.utils.flop_counter`` as :mod:`dsod.apps.summary` counts
    them, but on the meta device: the same shapes and count, no memory and no arithmetic."""
    size = config.model.input_size
    try:
        with torch.device("meta"):
            model = build_model(config).eval()
        image = torch.empty(1, 3, size, size, device="meta")
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(image)
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel: count for real
        model = build_model(config).eval()
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def parameter_count(config: Config) -> int:
    """Learnable parameters of the config's detector (built on the meta device)."""
    with torch.device("meta"):
        return count_parameters(build_model(config))


def conv_ceiling(
    device: torch.device, precision: str, counts: Counts, channels_last: bool = True
) -> dict[str, Any]:
    """GFLOP/s of one plain 3x3 convolution (C -> C channels, stride 1, padding 1, no bias)
    at ``counts.conv = (batch, C, side)``, median of ``counts.conv_runs``: what this machine
    sustains on a detector-like layer, the yardstick for the whole network."""
    batch, channels, side = counts.conv
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device).eval()
    x = torch.randn(batch, channels, side, side, device=device)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    flops = 2.0 * batch * channels * channels * 9 * side * side
    with torch.inference_mode(), autocast_context(device, amp_setting(precision)):
        times = time_runs(lambda: conv(x), counts.conv_runs, counts.warmup, device)
    return {
        "gflops_per_s": flops / median(times) / 1e9,
        "ms": median(times) * 1e3,
        "gflop": flops / 1e9,
        "shape": [batch, channels, side, side],
    }


def torchvision_full_latency(
    num_classes: int, device: torch.device, counts: Counts
) -> dict[str, Any]:
    """Batch-1 latency (fp32, ms) of torchvision's complete ``ssd300_vgg16`` in eval mode on a
    500x375 image in 0..1: its resize and normalisation, the network, its anchors, decoding
    and NMS. Untrained, its near-uniform scores pass the 0.01 threshold everywhere, so NMS
    sees the maximum number of candidates: an upper bound of its post-processing cost."""
    from torchvision.models.detection import ssd300_vgg16

    with torch.no_grad():
        model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes)
    model = model.to(device).eval()
    image = torch.rand(3, 375, 500, device=device)
    with torch.inference_mode():
        times = time_runs(lambda: model([image]), counts.latency_runs, counts.warmup, device)
    return {
        "latency_ms_b1": median(times) * 1e3,
        "latency_ms_b1_best": min(times) * 1e3,
        "input": "one 500x375 RGB image in 0..1 (resized to 300x300 inside)",
    }
