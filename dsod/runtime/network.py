"""A detector network prepared to run: one place that decides how training, evaluation,
the Python API and the benchmark run a network.

:func:`prepare_network` takes the paper's network (:class:`dsod.models.detector.DSOD` or
SSD300) and returns a :class:`Network` whose :meth:`Network.run` maps a batch of images to
``(logits, offsets)``: it moves the batch to the device in the chosen layout and runs it
in the chosen precision. What it runs through is chosen once, here:

* training: the model itself (its parameters are the ones the optimizer updates), with
  the speed paths swapped in (:func:`~dsod.runtime.speed_paths.for_training`), recomputed
  in the backward pass if memory-efficient, compiled if asked, wrapped in
  DistributedDataParallel when distributed;
* inference: an eval-mode copy with the speed paths
  (:func:`~dsod.runtime.speed_paths.for_inference`: BNs folded, shared-buffer dense
  blocks, weights stored in the precision's dtype), compiled with frozen weights if asked,
  replayed from CUDA graphs if asked (on a GPU).

With ``speed_paths`` off both run the paper's plain modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dsod.runtime.compiled import compile_for_inference, compile_for_training
from dsod.runtime.cuda_graph import CUDAGraphForward
from dsod.runtime.precision import amp_dtype, autocast_context, resolve_amp
from dsod.runtime.speed_paths import for_inference, for_training

__all__ = ["Network", "RunSettings", "channels_last_for", "prepare_network"]


def channels_last_for(setting: bool | None, device: torch.device | str) -> bool:
    """Whether to run in the channels-last (NHWC) layout: ``train.channels_last`` when set;
    when it is None, on the CPU only, where oneDNN trains and evaluates faster in NHWC
    (docs/PERFORMANCE.md); on GPUs NCHW versus NHWC was not measured, so None keeps
    PyTorch's default there."""
    return torch.device(device).type == "cpu" if setting is None else bool(setting)


@dataclass(frozen=True)
class RunSettings:
    """How a network runs, every choice resolved for one device.

    Attributes:
        device: where the network and its inputs live.
        amp: the precision, resolved: ``"none"`` (fp32), ``"bf16"`` or ``"fp16"``
            (:mod:`dsod.runtime.precision`).
        channels_last: inputs (and the network) in the NHWC layout.
        speed_paths: run the faster twins of the paper's modules (``train.speed_paths``,
            :mod:`dsod.runtime`); False runs the plain modules.
        why: one line saying why this precision was chosen (for the log).
    """

    device: torch.device
    amp: str
    channels_last: bool
    speed_paths: bool = True
    why: str = "as configured"

    @classmethod
    def resolve(
        cls,
        device: torch.device | str,
        amp: str = "auto",
        channels_last: bool | None = None,
        speed_paths: bool = True,
    ) -> RunSettings:
        """Settings for ``device`` from the user's ``amp`` (``"auto"`` included),
        ``channels_last`` (None: :func:`channels_last_for` chooses) and ``speed_paths``."""
        device = torch.device(device)
        resolved, why = resolve_amp(amp, device)
        return cls(device, resolved, channels_last_for(channels_last, device), speed_paths, why)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None for fp32."""
        return amp_dtype(self.amp)


class Network:
    """A network prepared by :func:`prepare_network`.

    Attributes:
        model: the paper's network whose parameters and state are the ones that count (the
            one to save, evaluate and hand to the optimizer).
        module: what :meth:`run` calls: ``model`` itself, or a copy for inference, possibly
            compiled and/or wrapped in DistributedDataParallel.
        settings: device, precision and layout.
    """

    def __init__(
        self,
        model: nn.Module,
        module: nn.Module,
        settings: RunSettings,
        graphed: CUDAGraphForward | None = None,
    ) -> None:
        self.model = model
        self.module = module
        self.settings = settings
        self.graphed = graphed

    def run(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images [B, 3, S, S]`` (BGR, mean subtracted, any device) ->
        ``(logits [B, P, C+1], offsets [B, P, 4])`` on the network's device, in the
        autocast dtype when one is set (fp32 for ``amp="none"``)."""
        s = self.settings
        images = images.to(s.device, non_blocking=True)
        if s.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.graphed is not None:
            return self.graphed(images)
        with autocast_context(s.device, s.amp):
            return self.module(images)

    __call__ = run

    @contextlib.contextmanager
    def no_sync(self, skip: bool = True) -> Iterator[None]:
        """With ``skip``, gradients are not all-reduced across processes inside the block
        (accumulation over micro-batches under DDP); a no-op in one process."""
        if skip and isinstance(self.module, DistributedDataParallel):
            with self.module.no_sync():
                yield
        else:
            yield


def prepare_network(
    model: nn.Module,
    settings: RunSettings,
    *,
    training: bool,
    memory_efficient: bool = False,
    compile: bool = False,
    cuda_graphs: bool = False,
    distributed: bool = False,
    sync_bn: bool = False,
) -> Network:
    """``model`` made ready to run under ``settings``.

    Args:
        model: the paper's network (any mode, fp32 weights).
        settings: device, precision, layout and speed paths (:meth:`RunSettings.resolve`).
        training: for training, ``model`` itself gets the speed paths and is moved to the
            device and layout in place, and becomes :attr:`Network.model` (parameters and
            ``state_dict`` keys unchanged); for inference ``model`` is left as it is and
            the network runs an eval-mode copy with its BNs folded and its weights stored
            in the precision's dtype (:func:`~dsod.runtime.speed_paths.for_inference`).
        memory_efficient: training: recompute each dense layer's bottleneck and the stem in
            the backward pass instead of storing them (``model.memory_efficient``).
        compile: run through ``torch.compile`` (training: one graph per input shape,
            :func:`~dsod.runtime.compiled.compile_for_training`; inference: frozen weights,
            :func:`~dsod.runtime.compiled.compile_for_inference`). Compiles at the first
            call with each input shape.
        cuda_graphs: inference on a CUDA device: replay each input shape's forward pass
            from a recorded CUDA graph (:class:`~dsod.runtime.cuda_graph.CUDAGraphForward`);
            ignored elsewhere and for training.
        distributed: training under torchrun: wrap in DistributedDataParallel; with
            ``sync_bn``, its BNs first become SyncBatchNorm.
    """
    device = settings.device
    if not training:
        copy = for_inference(
            model,
            speed_paths=settings.speed_paths,
            channels_last=settings.channels_last,
            dtype=settings.dtype,
        )
        copy = copy.to(device)
        module = compile_for_inference(copy) if compile else copy
        graphed = (
            CUDAGraphForward(module, autocast_dtype=settings.dtype)
            if cuda_graphs and device.type == "cuda"
            else None
        )
        return Network(copy, module, settings, graphed)
    model = for_training(
        model, speed_paths=settings.speed_paths, memory_efficient=memory_efficient
    )
    if sync_bn and distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if device.type == "cuda":  # fixed input size: let cuDNN time and pick its kernels
        torch.backends.cudnn.benchmark = True
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    module: Any = compile_for_training(model) if compile else model
    if distributed:
        module = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None
        )
    return Network(model, module, settings)
