"""The benchmark sections in --quick mode on a tiny detector (a smoke test of the tool: the
figures themselves are not checked, only that every one is there and positive)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import load_tool, tiny_config

from benchmarks.common import BenchOptions, default_counts
from benchmarks.models import forward_gflops
from benchmarks.pipeline import trained_like_outputs
from benchmarks.suite import SECTIONS, run_benchmarks
from dsod.apps.summary import model_summary


def benchmark_tool():
    return load_tool("benchmark")


def _positive_numbers(value: object, where: str = "") -> list[str]:
    """Paths of numbers in ``value`` that are not finite and positive (bools excluded)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _positive_numbers(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _positive_numbers(v, f"{where}[{i}]")]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [] if math.isfinite(value) and value > 0 else [f"{where}={value}"]
    return []


def test_quick_run_of_every_section(tmp_path: Path) -> None:
    tiny = tiny_config(tmp_path)
    # Five classes where the data section's synthetic images have three, as DSOD300's 20
    # VOC classes against BCCD's 3: that section uses the data's own classes.
    tiny = dataclasses.replace(
        tiny, data=dataclasses.replace(tiny.data, class_names=("a", "b", "c", "d", "e"))
    )
    plain = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, prediction="plain"))
    options = BenchOptions(
        quick=True, threads=1, data_root=str(tmp_path / "no_data"), train_batches=(3, 2)
    )
    printed: list[str] = []
    report = run_benchmarks(
        {"tiny": tiny, "tiny_plain": plain}, options, torchvision_full=False, echo=printed.append
    )
    assert report["errors"] == {}
    assert list(report["results"]) == list(SECTIONS)
    assert len(printed) == len(SECTIONS)
    report = json.loads(json.dumps(report))  # JSON-ready as it is

    machine = report["machine"]
    for key in ("cpu", "logical_cores", "torch_threads", "versions", "gpu"):
        assert key in machine
    assert set(machine["versions"]) == {"torch", "torchvision", "numpy", "cv2"}
    assert machine["torch_threads"] == 1
    assert report["settings"]["precisions"] == ["fp32", "bf16"]

    results = report["results"]
    for name in ("tiny", "tiny_plain"):
        for precision in ("fp32", "bf16"):
            inference = results["inference"][name][precision]
            assert {"latency_ms_b1", "throughput_img_s"} <= set(inference)
            assert {"train_img_s", "step_s"} <= set(results["training"][name][precision])
            assert results["training"][name][precision]["finite"] is True
            sweep = results["training"][name][precision]["sweep"]
            assert [row["batch"] for row in sweep] == [2, 3]  # in increasing order
            assert all(row["train_img_s"] > 0 and row["step_s"] > 0 for row in sweep)
            assert all(row["finite"] for row in sweep)
        assert results["inference"][name]["params"] > 0
    for precision in ("fp32", "bf16"):
        entry = results["ceiling"][precision]
        assert {"conv3x3", "model_gflops_per_s", "fraction_of_ceiling"} <= set(entry)
    memory = results["memory"]["rows"]
    assert [r["memory_efficient"] for r in memory] == [True, False]
    for row in memory + results["memory_per_image"]["rows"]:
        assert {"peak_gib", "step_delta_gib", "step_s", "method"} <= set(row)
        assert row["peak_gib"] > 0
    step_time = results["memory"]["step_time"]
    assert step_time["ratio"] == pytest.approx(
        step_time["memory_efficient_s"] / step_time["plain_s"]
    )
    assert step_time["plain_s"] > 0 and step_time["rounds"] == 1
    assert results["memory_per_image"]["precision"] == "bf16"
    assert "gib_per_image" in results["memory_per_image"]  # may be ~0 for a tiny net
    assert results["postprocess"]["ms_per_image"] > 0
    assert results["data"]["source"].startswith("synthetic")
    assert results["voc_eval"]["seconds"] > 0

    without_slope = dict(results)
    without_slope["training"] = {  # sweep rows are checked above (bf16 losses may be NaN)
        name: {
            p: {k: v for k, v in m.items() if k != "sweep"} if isinstance(m, dict) else m
            for p, m in entry.items()
        }
        for name, entry in results["training"].items()
    }
    without_slope["memory_per_image"] = {
        k: v for k, v in results["memory_per_image"].items() if k != "gib_per_image"
    }
    memory_rows = [
        {k: v for k, v in r.items() if k != "step_delta_gib"}
        for r in memory + results["memory_per_image"]["rows"]
    ]
    assert _positive_numbers(memory_rows) == []
    for section in ("inference", "training", "ceiling", "postprocess", "data", "voc_eval"):
        assert _positive_numbers(without_slope[section], section) == []


def test_tool_writes_json(tmp_path: Path) -> None:
    main = benchmark_tool().main
    out = tmp_path / "bench.json"
    code = main(
        [
            "--quick",
            "--only",
            "postprocess,voc_eval",
            "--threads",
            "1",
            "--data-root",
            str(tmp_path / "none"),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"postprocess", "voc_eval"}
    assert report["results"]["postprocess"]["priors"] == 8744  # DSOD300's
    assert report["settings"]["models"] == ["dsod300", "ssd300_vgg16"]


def test_report_names_models_by_architecture(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = benchmark_tool().main(
        [
            "--quick",
            "--only",
            "postprocess",
            "--threads",
            "1",
            "--dsod-config",
            "configs/ssd300_vgg16_voc.yaml",
            "--ssd-config",
            "none",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["models"] == ["ssd300_vgg16"]
    assert report["results"]["postprocess"]["priors"] == 8732  # SSD300's, not DSOD300's


def test_bad_batches_are_errors(tmp_path: Path) -> None:
    main = benchmark_tool().main
    for bad in (["--train-batches", "32,x"], ["--train-batches", "1"], ["--batch", "1"]):
        assert main(["--quick", "--only", "voc_eval", *bad]) == 2
    assert BenchOptions(train_batches=(), batch=4).resolve().counts.train_batches == ()
    assert BenchOptions(batch=4).resolve().counts.batch == 4


def test_sweep_stops_at_the_first_batch_that_fails(monkeypatch, tmp_path: Path) -> None:
    from benchmarks import models

    def fake_metrics(config, device, precision, counts, channels_last, batch, steps, compile):
        if batch >= 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return {"batch": batch, "train_img_s": float(batch)}

    monkeypatch.setattr(models, "training_metrics", fake_metrics)
    counts = dataclasses.replace(default_counts("cpu", quick=True), train_batches=(32, 8, 16))
    rows = models.training_sweep(
        tiny_config(tmp_path), torch.device("cpu"), "fp32", counts, channels_last=False
    )
    assert [row["batch"] for row in rows] == [8, 16]
    assert rows[0]["train_img_s"] == 8.0
    assert rows[1]["error"].startswith("OutOfMemoryError: CUDA out of memory")


def test_training_step_uses_the_first_iterations_learning_rate(tmp_path: Path) -> None:
    from benchmarks.models import TrainingStep

    config = tiny_config(tmp_path, solver={"warmup_iters": 10, "warmup_factor": 0.25})
    step = TrainingStep(config, torch.device("cpu"), 2, "fp32", channels_last=False)
    assert {g["lr"] for g in step.optimizer.param_groups} == {config.solver.lr * 0.25}


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    main = benchmark_tool().main
    assert main(["--quick", "--only", "nonsense", "--data-root", str(tmp_path)]) == 2


def test_flops_on_meta_match_the_summary(tmp_path: Path) -> None:
    tiny = tiny_config(tmp_path)
    assert forward_gflops(tiny) == pytest.approx(model_summary(tiny)["gflops"])


def test_trained_like_outputs_are_mostly_background() -> None:
    logits, offsets = trained_like_outputs(8744, 21, 2)
    scores = logits.softmax(-1)
    assert (scores[..., 0] > 0.9).float().mean() > 0.8
    per_image = (scores[..., 1:] > 0.01).sum((1, 2))
    assert (per_image > 200).all() and (per_image < 5000).all()  # a tail, not a flood
    assert (scores[..., 1:] > 0.3).sum((1, 2)).min() >= 6 * 12 * 0.9
    assert offsets.shape == (2, 8744, 4) and torch.isfinite(offsets).all()


def test_counts() -> None:
    quick = default_counts("cpu", quick=True)
    assert quick.batch >= 2 and min(quick.memory_batches) >= 2  # BN needs 2 per channel
    full = default_counts("cpu")
    assert full.batch == 8 and full.memory_batches == (8, 16)
    assert full.voc_images == 5000 and full.voc_detections == 200
    with pytest.raises(ValueError, match="fp16"):
        BenchOptions(precisions=("fp16",)).resolve()


def test_training_is_timed_in_the_fastest_mode(tmp_path: Path) -> None:
    from benchmarks.suite import fastest_training_config

    lean = tiny_config(tmp_path, model={"memory_efficient": True})
    assert fastest_training_config(lean).model.memory_efficient is False
    assert lean.model.memory_efficient is True  # the caller's config is left alone
    ssd = dataclasses.replace(lean, model=dataclasses.replace(lean.model, arch="ssd300_vgg16"))
    assert fastest_training_config(ssd) is ssd


def test_the_report_names_this_repository_and_its_commit() -> None:
    from benchmarks.common import REPO_ROOT, _git_commit

    assert (REPO_ROOT / "benchmarks" / "common.py").is_file()
    assert (REPO_ROOT / "dsod" / "__init__.py").is_file()
    if (REPO_ROOT / ".git").exists():
        assert _git_commit() is not None
