"""CUDA graphs: the whole inference network (every paper block at once) replayed from one
recorded kernel-launch sequence per call.

A detector at batch 1 launches hundreds of small kernels (DSOD300: about 400); on a fast
GPU the host spends longer launching them than the GPU spends running them. A CUDA graph
records the launches once and replays them with one call, so the batch-1 latency becomes
the GPU's own time (docs/PERFORMANCE.md has the figures). The price: each input shape
needs its own
recording, the inputs are copied into a fixed buffer, and the outputs live in buffers that
the next replay overwrites (they are cloned before being returned). Replayed, the network
must give the eager network's outputs (``tests/test_cuda_graph.py``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

__all__ = ["CUDAGraphForward"]


class CUDAGraphForward:
    """``module(x)`` for CUDA inputs, replayed from one CUDA graph per input shape.

    Args:
        module: an inference network (eval mode; its parameters and buffers must not be
            replaced after the first call, since the graph reads them where they were).
        autocast_dtype: run under ``torch.autocast("cuda", dtype)`` (e.g. ``torch.float16``),
            or ``None`` for the module's own precision.
        warmup: eager calls on a side stream before recording (cuDNN picks its algorithms,
            the allocator settles).
        max_graphs: input shapes kept at once; the oldest recording is dropped beyond it.

    Calling it with a CUDA tensor ``[B, C, H, W]`` returns what ``module`` returns (a tensor
    or a tuple/list of tensors), as new tensors. Inputs on another device run eagerly, so
    the same object serves CPU and GPU. Gradients are not recorded (inference mode).
    """

    def __init__(
        self,
        module: nn.Module,
        autocast_dtype: torch.dtype | None = None,
        warmup: int = 3,
        max_graphs: int = 8,
    ) -> None:
        self.module = module
        self.autocast_dtype = autocast_dtype
        self.warmup = warmup
        self.max_graphs = max_graphs
        self._graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}

    def _autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # Autocast's cast cache must be off while recording: cached casts would be freed.
        return torch.autocast(device_type, dtype=self.autocast_dtype, cache_enabled=False)

    @staticmethod
    def _key(x: torch.Tensor) -> tuple[Any, ...]:
        return (tuple(x.shape), x.stride(), x.dtype, x.device)

    def _record(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]:
        static_input = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        static_input.copy_(x)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side), self._autocast("cuda"):
            for _ in range(self.warmup):
                self.module(static_input)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), self._autocast("cuda"):
            static_output = self.module(static_input)
        return graph, static_input, static_output

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> Any:
        if x.device.type != "cuda":
            with self._autocast(x.device.type):
                return self.module(x)
        key = self._key(x)
        if key not in self._graphs:
            if len(self._graphs) >= self.max_graphs:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = self._record(x)
        graph, static_input, static_output = self._graphs[key]
        static_input.copy_(x)
        graph.replay()
        if isinstance(static_output, torch.Tensor):
            return static_output.clone()
        return type(static_output)(t.clone() for t in static_output)

    @property
    def recorded_shapes(self) -> list[tuple[int, ...]]:
        """Input shapes with a recording, oldest first."""
        return [key[0] for key in self._graphs]
