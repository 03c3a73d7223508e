"""Options, repetition counts, timing and the machine description shared by all sections."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsod.config import Config
from dsod.runtime.host_memory import allocator_mode
from dsod.runtime.precision import PRECISION_NAMES

PRECISIONS = tuple(PRECISION_NAMES.values())  # fp32, bf16, fp16
REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = float(1 << 30)


@dataclass(frozen=True)
class Counts:
    """How often and how big: repetitions and batch sizes of every measurement."""

    warmup: int = 2  # untimed runs before each timed series
    latency_runs: int = 10  # batch-1 inference runs (median reported)
    throughput_runs: int = 3  # batch inference runs
    train_steps: int = 3  # training steps
    step_time_rounds: int = 5  # alternating memory-efficient / plain steps (median reported)
    batch: int = 8  # throughput and training batch
    train_batches: tuple[int, ...] = ()  # training batch sweep, up to the first that fails
    sweep_steps: int = 5  # training steps per sweep batch
    memory_batches: tuple[int, int] = (8, 16)  # training memory per image
    postprocess_batch: int = 8
    postprocess_runs: int = 10
    data_images: int = 64  # samples through the data pipeline
    voc_images: int = 5000
    voc_detections: int = 200  # per image
    voc_runs: int = 3
    conv: tuple[int, int, int] = (8, 256, 38)  # ceiling convolution: batch, channels, side
    conv_runs: int = 10


def default_counts(device: str, quick: bool = False) -> Counts:
    """The counts of a full run on ``device`` (more repetitions on CUDA), or of ``--quick``:
    one warm-up, two runs, batches of 2 (4), few images: a smoke run, not a measurement.
    Training batches stay at 2 or more, as batch norm needs two values per channel."""
    if quick:
        return Counts(
            warmup=1,
            latency_runs=2,
            throughput_runs=2,
            train_steps=1,
            step_time_rounds=1,
            batch=2,
            memory_batches=(2, 4),
            postprocess_batch=2,
            postprocess_runs=2,
            data_images=4,
            voc_images=100,
            voc_detections=20,
            voc_runs=1,
            conv=(2, 64, 16),
            conv_runs=2,
        )
    if device == "cuda":
        return Counts(
            warmup=5,
            latency_runs=50,
            throughput_runs=20,
            train_steps=10,
            train_batches=(32, 64, 128, 256, 512),
            postprocess_runs=20,
            conv_runs=50,
        )
    return Counts()


def default_precisions(device: str) -> tuple[str, ...]:
    """fp32 plus the device's reduced precision: fp16 on CUDA; bf16 on a CPU only where it
    is native (AVX512-BF16 or AMX): emulated, it runs 6-10 times slower and the default
    benchmark would not finish in ten minutes (``--precisions fp32,bf16`` asks for it)."""
    if device == "cuda":
        return ("fp32", "fp16")
    from dsod.runtime.precision import cpu_has_native_bf16

    return ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",)


@dataclass
class BenchOptions:
    """What to measure and how.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        quick: tiny counts (see :func:`default_counts`), for tests and smoke runs.
        precisions: subset of ``fp32, bf16, fp16``; None: :func:`default_precisions`.
        channels_last: run models in the channels-last memory format.
        threads: ``torch.set_num_threads`` for the run (None: torch's default).
        data_root: BCCD (VOC layout) for the data-pipeline section; synthetic JPEGs when
            it does not exist.
        counts: None: :func:`default_counts`.
        train_batches: replaces ``counts.train_batches`` (the training batch sweep; ``()``
            for none); None keeps it.
        batch: replaces ``counts.batch`` (inference throughput, training and memory batch);
            None keeps it.
        compile: run the inference models through ``torch.compile`` with frozen weights
            (:func:`dsod.runtime.compiled.compile_for_inference`) and the training models
            as ``train.compile`` does (:func:`dsod.runtime.compiled.compile_for_training`).
    """

    device: str = "cpu"
    quick: bool = False
    precisions: tuple[str, ...] | None = None
    channels_last: bool = True
    threads: int | None = None
    data_root: str = "../shared/data/bccd"
    counts: Counts | None = None
    train_batches: tuple[int, ...] | None = None
    batch: int | None = None
    compile: bool = False

    def resolve(self) -> BenchOptions:
        """A copy with every None filled in; checks the device and precisions. On CUDA it
        also turns on cuDNN's autotuner (fixed input sizes: the best kernels for both models)."""
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")
        if self.device == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("--device cuda, but torch sees no CUDA device")
            torch.backends.cudnn.benchmark = True
        precisions = self.precisions or default_precisions(self.device)
        if self.precisions is None and self.device == "cpu" and "bf16" not in precisions:
            print(
                "benchmark: bf16 left out: this CPU has no native bf16 (AVX512-BF16 or "
                "AMX); --precisions fp32,bf16 measures it anyway",
                file=sys.stderr,
            )
        unknown = [p for p in precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision(s) {unknown}; choose from {PRECISIONS}")
        if "fp16" in precisions and self.device == "cpu":
            raise ValueError("fp16 autocast is for CUDA; use bf16 on CPU")
        counts = self.counts or default_counts(self.device, self.quick)
        if self.train_batches is not None:
            if any(b < 2 for b in self.train_batches):
                raise ValueError(
                    f"training batches must be 2 or more (batch norm), got "
                    f"{list(self.train_batches)}"
                )
            counts = dataclasses.replace(counts, train_batches=tuple(self.train_batches))
        if self.batch is not None:
            if self.batch < 2:
                raise ValueError(f"the batch must be 2 or more (batch norm), got {self.batch}")
            counts = dataclasses.replace(counts, batch=self.batch)
        return dataclasses.replace(
            self,
            precisions=tuple(precisions),
            counts=counts,
            train_batches=None,
            batch=None,
            threads=self.threads or torch.get_num_threads(),
        )

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def as_dict(self) -> dict[str, Any]:
        """Settings for the JSON report."""
        return {
            "device": self.device,
            "quick": self.quick,
            "precisions": list(self.precisions or ()),
            "channels_last": self.channels_last,
            "threads": self.threads,
            "compile": self.compile,
            "data_root": self.data_root,
            "counts": dataclasses.asdict(self.counts) if self.counts else None,
        }


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times are complete."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(fn: Callable[[], Any], runs: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def with_memory_efficient(config: Config, memory_efficient: bool) -> Config:
    """``config`` with ``model.memory_efficient`` set (the caller's config is left alone)."""
    return dataclasses.replace(
        config, model=dataclasses.replace(config.model, memory_efficient=memory_efficient)
    )


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``torch.set_num_threads(count)`` and restore the previous count."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cpuinfo() -> tuple[str, set[str]]:
    """CPU model name and flags from /proc/cpuinfo (Linux), else platform's guess."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """The machine and software a report was measured with."""
    import cv2
    import numpy
    import torchvision

    cpu, flags = _cpuinfo()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    info: dict[str, Any] = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "cpu_features": sorted(
            flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_tile"}
        ),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": numpy.__version__,
            "cv2": cv2.__version__,
        },
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "malloc": allocator_mode(),
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / GIB
        info["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    return info
