"""train.amp: auto picks the precision for the machine; explicit settings are kept."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import tiny_config

from dsod.engine.trainer import train
from dsod.runtime import precision
from dsod.runtime.precision import resolve_amp


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: value)
        precision._warn_slow_bf16.cache_clear()

    return set_native


def test_auto_is_bf16_only_on_cpus_with_native_bf16(native_bf16):
    native_bf16(True)
    assert resolve_amp("auto", "cpu")[0] == "bf16"
    native_bf16(False)
    amp, why = resolve_amp("auto", "cpu")
    assert amp == "none" and "no native bf16" in why
    assert resolve_amp("auto", torch.device("cuda"))[0] == "fp16"


def test_explicit_settings_are_kept_and_slow_bf16_is_warned_about_once(native_bf16, caplog):
    native_bf16(False)
    with caplog.at_level(logging.WARNING, logger="dsod.runtime.precision"):
        assert resolve_amp("bf16", "cpu")[0] == "bf16"
        assert resolve_amp("bf16", "cpu")[0] == "bf16"
        assert resolve_amp("none", "cpu")[0] == "none"
    assert caplog.text.count("6-10 times slower") == 1
    native_bf16(True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dsod.runtime.precision"):
        assert resolve_amp("bf16", "cpu")[0] == "bf16"
    assert "slower" not in caplog.text
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", "cpu")


def test_the_cpu_check_reads_the_cpu_flags_when_torch_cannot_say(monkeypatch):
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"avx2", "fma"})
    assert precision.cpu_has_native_bf16() is False
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"avx2", "amx_bf16"})
    assert precision.cpu_has_native_bf16() is True
    precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("native, said", [(False, "precision: fp32"), (True, "precision: bf16")])
def test_training_says_what_auto_chose(tmp_path, native_bf16, caplog, native, said):
    native_bf16(native)
    config = tiny_config(tmp_path, train={"amp": "auto"}, solver={"max_iter": 1})
    with caplog.at_level(logging.INFO):
        train(config, tmp_path / "run", progress=False)
    assert said in caplog.text


def test_the_benchmark_leaves_out_bf16_on_a_cpu_without_it_unless_asked(native_bf16, capsys):
    from benchmarks.common import BenchOptions

    native_bf16(False)
    assert BenchOptions().resolve().precisions == ("fp32",)
    assert "bf16 left out" in capsys.readouterr().err
    assert BenchOptions(precisions=("fp32", "bf16")).resolve().precisions == ("fp32", "bf16")
    native_bf16(True)
    assert BenchOptions().resolve().precisions == ("fp32", "bf16")
