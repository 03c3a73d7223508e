"""Peak training memory, measured in a fresh child process per setting.

Each setting runs in its own child process, so that nothing allocated by earlier
measurements (allocator caches, oneDNN primitives, CUDA blocks) is counted. Children are
forked from a ``multiprocessing`` fork server that has only imported torch and this package
(never run anything), so each starts clean without paying the imports again. The child
builds the model, optimizer and one batch, runs one warm-up training step (it allocates the
momentum buffers and the allocator's pools), releases the gradients, then measures one more
step:

* CPU: the resident set size from ``/proc/self/status``. Before the measured step the
  kernel's high-water mark is reset (``echo 5 > /proc/self/clear_refs``, Linux 4.0+) and
  ``VmHWM`` is read after it. ``peak_gib`` is that high-water mark minus the RSS the child
  had when it started (modules imported, nothing built): parameters, momentum, gradients,
  activations, temporaries and allocator slack. ``step_delta_gib`` is the high-water mark
  minus the RSS just before the step: what the step itself adds on top of the model and
  optimizer state. Where the mark cannot be reset, ``ru_maxrss`` (the child's lifetime
  peak, warm-up step included, which allocates the same) stands in, and ``hwm_reset``
  says so. ``tracemalloc`` would not see torch's allocations.
* CUDA: ``torch.cuda.max_memory_allocated`` over the measured step (tensor memory; the
  caching allocator's reserve, reported as ``peak_reserved_gib``, and the CUDA context are
  not included), and the allocation before the step for ``step_delta_gib``.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import resource
import sys
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from benchmarks.common import GIB, BenchOptions, median, time_runs, with_memory_efficient
from benchmarks.models import TrainingStep
from dsod.config import Config, config_to_dict

CHILD_TIMEOUT_S = 3600


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS; False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Body of the subprocess: one warm-up and one measured training step."""
    import torch

    from benchmarks.models import TrainingStep
    from dsod.config import config_from_dict

    start_rss = _status_kib("VmRSS")  # modules imported, no model or data yet
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    config = config_from_dict(spec["config"])
    step = TrainingStep(config, device, spec["batch"], spec["precision"], spec["channels_last"])
    step()  # warm-up
    step.optimizer.zero_grad(set_to_none=True)  # the measured step starts without gradients
    gc.collect()
    result: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    before_rss = _status_kib("VmRSS")
    hwm_reset = _reset_peak_rss()
    began = time.perf_counter()
    loss = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    result["step_s"] = time.perf_counter() - began
    result["finite"] = math.isfinite(loss)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
        result.update(
            method="torch.cuda.max_memory_allocated",
            peak_gib=peak / GIB,
            step_delta_gib=(peak - before) / GIB,
            peak_reserved_gib=torch.cuda.max_memory_reserved() / GIB,
        )
        return result
    peak_kib = _status_kib("VmHWM") if hwm_reset else None
    if peak_kib is None:  # ru_maxrss is in KiB on Linux, bytes on macOS
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_kib //= 1024 if sys.platform == "darwin" else 1
    result.update(
        method="VmHWM" if hwm_reset else "ru_maxrss",
        hwm_reset=hwm_reset,
        peak_rss_gib=peak_kib / 2**20,
        peak_gib=(peak_kib - (start_rss or 0)) / 2**20,
        step_delta_gib=(peak_kib - (before_rss or 0)) / 2**20,
        baseline_rss_gib=(start_rss or 0) / 2**20,
    )
    return result


def _memory_spec(
    config: Config,
    options: BenchOptions,
    batch: int,
    precision: str,
    memory_efficient: bool | None,
) -> dict[str, Any]:
    if memory_efficient is not None:
        config = with_memory_efficient(config, memory_efficient)
    return {
        "config": config_to_dict(config),
        "device": options.device,
        "batch": batch,
        "precision": precision,
        "channels_last": options.channels_last,
        "threads": options.threads or 1,
    }


def _child_entry(spec: dict[str, Any], conn: Connection) -> None:
    """What a forked child runs: measure, send the result (or the error) back."""
    try:
        conn.send(_child(spec))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _context() -> multiprocessing.context.BaseContext:
    """Fresh children forked from a server that has only imported torch and this package."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["benchmarks.memory", "benchmarks.models"])
    return ctx


def _start_child(spec: dict[str, Any]) -> tuple[BaseProcess, Connection]:
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_entry, args=(spec, sender), daemon=True)
    proc.start()
    sender.close()
    return proc, receiver


def _finish_child(child: tuple[BaseProcess, Connection], spec: dict[str, Any]) -> dict[str, Any]:
    proc, receiver = child
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    result: dict[str, Any] | None = None
    while result is None and time.monotonic() < deadline:
        if receiver.poll(0.2):
            try:
                result = receiver.recv()
            except EOFError:
                break
        elif not proc.is_alive() and not receiver.poll(0):
            break
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if result is None:
        raise RuntimeError(
            f"the memory subprocess ended without a result (exit code "
            f"{proc.exitcode}; killed for memory, or over {CHILD_TIMEOUT_S} s)"
        )
    if "error" in result:
        raise RuntimeError(f"the memory subprocess failed:\n{result['error'][-2000:]}")
    result.update(
        batch=spec["batch"],
        precision=spec["precision"],
        memory_efficient=spec["config"]["model"]["memory_efficient"],
    )
    return result


def run_memory_children(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One fresh child per spec, one after the other; their results in order."""
    return [_finish_child(_start_child(spec), spec) for spec in specs]


def training_memory(
    config: Config,
    options: BenchOptions,
    batch: int,
    precision: str,
    memory_efficient: bool | None = None,
) -> dict[str, Any]:
    """Peak memory and time of one training step at ``batch`` in a fresh subprocess (see
    the module docstring for the method). ``memory_efficient`` overrides the config's."""
    spec = _memory_spec(config, options, batch, precision, memory_efficient)
    return run_memory_children([spec])[0]


def alternating_step_times(
    config: Config, options: BenchOptions, precision: str = "fp32"
) -> dict[str, Any]:
    """Median training step time (s) at ``counts.batch`` with memory-efficient and with plain
    dense layers, timed in alternation in this process after one warm-up step each, so that
    both see the same machine load: ``{"memory_efficient_s", "plain_s", "ratio", "rounds"}``."""
    steps = {}
    for flag in (True, False):
        steps[flag] = TrainingStep(
            with_memory_efficient(config, flag),
            options.torch_device,
            options.counts.batch,
            precision,
            options.channels_last,
        )
        steps[flag]()  # warm-up: momentum buffers, allocator pools
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(options.counts.step_time_rounds):
        for flag, step in steps.items():
            times[flag] += time_runs(step, 1, 0, options.torch_device)
    efficient, plain = median(times[True]), median(times[False])
    return {
        "memory_efficient_s": efficient,
        "plain_s": plain,
        "ratio": efficient / plain,
        "rounds": options.counts.step_time_rounds,
        "precision": precision,
    }


def memory_section(config: Config, options: BenchOptions) -> dict[str, Any]:
    """Training memory at ``counts.batch`` in fp32, with and without the memory-efficient
    (recomputing) dense layers, each in its own process (with the time of that one step),
    and the step times of both timed side by side (:func:`alternating_step_times`)."""
    batch = options.counts.batch
    specs = [_memory_spec(config, options, batch, "fp32", flag) for flag in (True, False)]
    rows = run_memory_children(specs)
    return {"batch": batch, "rows": rows, "step_time": alternating_step_times(config, options)}


def memory_per_image_section(config: Config, options: BenchOptions) -> dict[str, Any]:
    """Training memory at two batch sizes with reduced-precision autocast (bf16; on a CUDA
    device without bf16, fp16) and memory-efficient layers; the slope is GiB per image."""
    precision = "bf16"
    if options.device == "cuda":
        import torch

        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    small, large = options.counts.memory_batches
    specs = [_memory_spec(config, options, b, precision, True) for b in (small, large)]
    rows = run_memory_children(specs)
    slope = (rows[1]["peak_gib"] - rows[0]["peak_gib"]) / (large - small)
    return {
        "precision": precision,
        "batches": [small, large],
        "rows": rows,
        "gib_per_image": slope,
    }
