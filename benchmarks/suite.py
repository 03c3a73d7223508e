"""Running the benchmark sections in order, printing each as it finishes, and the report."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmarks.common import BenchOptions, machine_info, torch_threads, with_memory_efficient
from benchmarks.memory import memory_per_image_section, memory_section
from benchmarks.models import (
    conv_ceiling,
    forward_gflops,
    inference_metrics,
    parameter_count,
    prepare_model,
    torchvision_full_latency,
    training_metrics,
    training_sweep,
)
from benchmarks.pipeline import data_section, postprocess_section, voc_eval_section
from dsod.config import Config

SECTIONS: tuple[str, ...] = (
    "inference",
    "training",
    "ceiling",
    "memory",
    "memory_per_image",
    "postprocess",
    "data",
    "voc_eval",
)


def inference_section(
    models: Mapping[str, Config], options: BenchOptions, torchvision_full: bool = True
) -> dict[str, Any]:
    """Per model: parameters, GFLOPs per image and, per precision, batch-1 latency and batch
    throughput of the raw outputs of the inference model (BN folded); plus torchvision's
    complete SSD300 (fp32) if asked."""
    device, out = options.torch_device, {}
    for name, config in models.items():
        entry: dict[str, Any] = {
            "params": parameter_count(config),
            "gflops_per_image": forward_gflops(config),
            "input_size": config.model.input_size,
        }
        for precision in options.precisions:
            model = prepare_model(
                config,
                device,
                options.channels_last,
                for_inference=True,
                compile=options.compile,
                precision=precision,
            )
            entry[precision] = inference_metrics(
                model,
                config.model.input_size,
                device,
                precision,
                options.counts,
                options.channels_last,
            )
            del model
        out[name] = entry
    if torchvision_full:
        num_classes = next(iter(models.values())).num_classes
        out["torchvision_ssd300_full"] = {
            "fp32": torchvision_full_latency(num_classes, device, options.counts)
        }
    return out


def fastest_training_config(config: Config) -> Config:
    """The config with plain dense layers: the fastest way to train it when memory allows
    (the memory section times the memory-efficient mode)."""
    if config.model.arch != "dsod" or not config.model.memory_efficient:
        return config
    return with_memory_efficient(config, False)


def training_section(models: Mapping[str, Config], options: BenchOptions) -> dict[str, Any]:
    """Per model and precision: training images per second (forward, loss, backward, SGD),
    each model in its fastest mode (:func:`fastest_training_config`), at ``counts.batch``
    and, under ``sweep``, at each batch of ``counts.train_batches`` that fits."""
    out: dict[str, Any] = {}
    device, counts = options.torch_device, options.counts
    for name, config in models.items():
        config = fastest_training_config(config)
        out[name] = {}
        for precision in options.precisions:
            entry = training_metrics(
                config, device, precision, counts, options.channels_last, compile=options.compile
            )
            if counts.train_batches:
                entry["sweep"] = training_sweep(
                    config, device, precision, counts, options.channels_last, options.compile
                )
            out[name][precision] = entry
        if config.model.arch == "dsod":
            out[name]["memory_efficient"] = config.model.memory_efficient
    return out


def ceiling_section(
    config: Config, options: BenchOptions, inference: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The 3x3-convolution GFLOP/s per precision, and the detector's inference GFLOP/s
    (FLOPs per image x batch throughput) as a fraction of it. The throughput is taken from
    ``inference`` (that section's entry for this model) or measured here."""
    device = options.torch_device
    gflops = forward_gflops(config)
    out: dict[str, Any] = {"gflops_per_image": gflops}
    for precision in options.precisions:
        ceiling = conv_ceiling(device, precision, options.counts, options.channels_last)
        if inference is not None and precision in inference:
            measured = inference[precision]  # the faster of eager and CUDA-graph replay
            throughput = max(
                measured["throughput_img_s"], measured.get("throughput_img_s_graph", 0.0)
            )
        else:
            model = prepare_model(
                config, device, options.channels_last, for_inference=True, precision=precision
            )
            throughput = inference_metrics(
                model,
                config.model.input_size,
                device,
                precision,
                options.counts,
                options.channels_last,
            )["throughput_img_s"]
        achieved = gflops * throughput
        out[precision] = {
            "conv3x3": ceiling,
            "model_gflops_per_s": achieved,
            "model_throughput_img_s": throughput,
            "fraction_of_ceiling": achieved / ceiling["gflops_per_s"],
        }
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_section(name: str, result: Mapping[str, Any]) -> str:
    """A short text table of one section's result."""
    lines = [f"== {name} =="]
    if name == "inference":
        lines.append(f"{'model':<26}{'prec':<6}{'latency b1 ms':>15}{'img/s (batch)':>16}")
        for model, entry in result.items():
            for precision, m in entry.items():
                if isinstance(m, dict):
                    batch = m.get("throughput_batch")
                    rate = f"{_fmt(m['throughput_img_s'])} ({batch})" if batch else "-"
                    lines.append(
                        f"{model:<26}{precision:<6}{_fmt(m['latency_ms_b1']):>15}{rate:>16}"
                    )
                    if "latency_ms_b1_graph" in m:
                        lines.append(
                            f"{'  CUDA graph':<26}{precision:<6}"
                            f"{_fmt(m['latency_ms_b1_graph'], 2):>15}"
                            f"{_fmt(m['throughput_img_s_graph']):>16}"
                        )
    elif name == "training":
        lines.append(f"{'model':<26}{'prec':<6}{'train img/s':>12}{'step s':>9}{'batch':>7}")
        for model, entry in result.items():
            for precision, m in entry.items():
                if not isinstance(m, dict):
                    continue
                for row in [m, *m.get("sweep", [])]:
                    if "error" in row:
                        lines.append(
                            f"{model:<26}{precision:<6}{'failed':>12}{'':>9}"
                            f"{row['batch']:>7}  {row['error'][:60]}"
                        )
                        continue
                    lines.append(
                        f"{model:<26}{precision:<6}{_fmt(row['train_img_s'], 2):>12}"
                        f"{_fmt(row['step_s'], 3):>9}{row['batch']:>7}"
                    )
    elif name == "ceiling":
        lines.append(f"model {_fmt(result['gflops_per_image'], 2)} GFLOPs per image")
        for precision, m in result.items():
            if isinstance(m, dict):
                shape = "x".join(str(v) for v in m["conv3x3"]["shape"])
                lines.append(
                    f"{precision:<6} conv3x3 [{shape}] "
                    f"{_fmt(m['conv3x3']['gflops_per_s'])} GFLOP/s; model "
                    f"{_fmt(m['model_gflops_per_s'])} GFLOP/s = "
                    f"{100 * m['fraction_of_ceiling']:.0f}% of it"
                )
    elif name in ("memory", "memory_per_image"):
        lines.append(
            f"{'mem-eff':<9}{'prec':<6}{'batch':>6}{'peak GiB':>10}{'step +GiB':>11}"
            f"{'step s':>9}  method"
        )
        for r in result["rows"]:
            lines.append(
                f"{str(r['memory_efficient']):<9}{r['precision']:<6}{r['batch']:>6}"
                f"{_fmt(r['peak_gib'], 3):>10}{_fmt(r['step_delta_gib'], 3):>11}"
                f"{_fmt(r['step_s'], 3):>9}  {r['method']}"
            )
        if name == "memory":
            t = result["step_time"]
            lines.append(
                f"step time side by side ({t['rounds']} rounds, {t['precision']}): "
                f"memory-efficient {_fmt(t['memory_efficient_s'], 3)} s, plain "
                f"{_fmt(t['plain_s'], 3)} s, ratio {_fmt(t['ratio'], 2)}"
            )
        if name == "memory_per_image":
            lines.append(f"slope: {_fmt(result['gib_per_image'], 4)} GiB per image")
    elif name == "postprocess":
        lines.append(
            f"{_fmt(result['ms_per_image'], 2)} ms per image (batch {result['batch']}, "
            f"{result['priors']:,} priors, {result['candidates_per_image']:,.0f} "
            f"candidates per image)"
        )
    elif name == "data":
        lines.append(
            f"{result['source']}: per worker, images/s: decode "
            f"{_fmt(result['decode_img_s'])}, augment {_fmt(result['augment_img_s'])} "
            f"({_fmt(result['augment_with_extra_img_s'])} with augment.extra), "
            f"match {_fmt(result['match_img_s'])}, whole sample "
            f"{_fmt(result['sample_img_s'])}"
        )
    elif name == "voc_eval":
        lines.append(
            f"{_fmt(result['seconds'], 2)} s for {result['images']:,} images x "
            f"{result['detections_per_image']} detections"
        )
    return "\n".join(lines)


def run_benchmarks(
    models: Mapping[str, Config],
    options: BenchOptions,
    only: Sequence[str] | None = None,
    torchvision_full: bool = True,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the chosen sections and return the report.

    Args:
        models: name -> config of the networks to compare; the first is the DSOD model used
            by the ceiling, memory, post-processing and data sections.
        options: what and how to measure (resolved here).
        only: section names (:data:`SECTIONS`); None runs all.
        torchvision_full: also time torchvision's complete SSD300 in the inference section.
        echo: prints each section's table as it finishes (None: quiet).

    Returns:
        ``{"machine", "settings", "results": {section: ...}, "errors": {section: text},
        "seconds": {section: wall time}}``; a failing section is reported, not raised.
    """
    options = options.resolve()
    chosen = list(SECTIONS if only is None else only)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    dsod_name, dsod = next(iter(models.items()))
    results: dict[str, Any] = {}
    report: dict[str, Any] = {
        "machine": {},
        "settings": {**options.as_dict(), "models": list(models), "sections": chosen},
        "results": results,
        "errors": {},
        "seconds": {},
    }
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "inference": lambda: inference_section(models, options, torchvision_full),
        "training": lambda: training_section(models, options),
        "ceiling": lambda: ceiling_section(
            dsod, options, results.get("inference", {}).get(dsod_name)
        ),
        "memory": lambda: memory_section(dsod, options),
        "memory_per_image": lambda: memory_per_image_section(dsod, options),
        "postprocess": lambda: postprocess_section(dsod, options),
        "data": lambda: data_section(dsod, options),
        "voc_eval": lambda: voc_eval_section(options),
    }
    with torch_threads(options.threads):
        report["machine"] = machine_info(options.device)
        for name in SECTIONS:
            if name not in chosen:
                continue
            start = time.perf_counter()
            try:
                results[name] = runners[name]()
            except Exception as error:  # noqa: BLE001 - one section's failure is reported
                report["errors"][name] = f"{type(error).__name__}: {error}"
                if echo:
                    echo(f"== {name} == FAILED\n{traceback.format_exc()}")
                continue
            finally:
                report["seconds"][name] = time.perf_counter() - start
            if echo:
                echo(format_section(name, results[name]))
                sys.stdout.flush()
    return report
