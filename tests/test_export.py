"""ONNX export of a tiny DSOD: ONNX Runtime's outputs match PyTorch's, for any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, load_tool

from dsod.config import config_from_dict, config_to_dict
from dsod.engine.builders import build_model
from dsod.engine.checkpoint import save_atomic
from dsod.export import compare_with_onnxruntime, config_metadata, export_onnx

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": dict(TINY_MODEL), "priors": {"steps": None}, "data": {"class_names": ["a", "b"]}}


def trained_looking_model():
    """A tiny model with non-trivial BN statistics, as after training."""
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    model = build_model(cfg)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64) * 50)
    return cfg, model.eval()


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_onnx_matches_pytorch_with_dynamic_batch(tmp_path, dynamo):
    if dynamo:
        pytest.importorskip("onnxscript")
    cfg, model = trained_looking_model()
    path = export_onnx(model, 64, tmp_path / "tiny.onnx", dynamo=dynamo)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits", "offsets"]
    for batch in (1, 3):
        images = torch.randn(batch, 3, 64, 64) * 60
        with torch.no_grad():
            logits, offsets = model(images)
        got_logits, got_offsets = session.run(None, {"images": images.numpy()})
        assert got_logits.shape == tuple(logits.shape) == (batch, logits.shape[1], 3)
        np.testing.assert_allclose(got_logits, logits.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_offsets, offsets.numpy(), atol=1e-4, rtol=0)
    assert compare_with_onnxruntime(path, model, 64, batch_size=2) < 1e-4


def test_export_tool_writes_checked_file_with_metadata(tmp_path, capsys):
    pytest.importorskip("onnx")
    import onnx

    cfg, model = trained_looking_model()
    save_atomic({"model": model.state_dict(), "config": config_to_dict(cfg)}, tmp_path / "m.pth")
    tool = load_tool("export")
    assert tool.main([str(tmp_path / "m.pth"), "--out", str(tmp_path / "m.onnx")]) == 0
    assert "max abs difference" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["class_names"]) == ["a", "b"] and props["input_size"] == "64"
    assert config_from_dict(json.loads(props["dsod_config"])) == cfg
    assert config_metadata(cfg)["mean_bgr"] == "[104.0, 117.0, 123.0]"
    # A checkpoint that does not exist is a one-line error.
    assert tool.main([str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth" in capsys.readouterr().err


def test_the_export_tool_overwrites_a_file_only_with_force(tmp_path, capsys):
    cfg, model = trained_looking_model()
    save_atomic({"model": model.state_dict(), "config": config_to_dict(cfg)}, tmp_path / "m.pth")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    tool = load_tool("export")
    assert tool.main([str(tmp_path / "m.pth"), "--no-verify"]) == 2  # default: m.onnx
    assert f"error: {out} exists; pass --force to overwrite it" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier export"
    assert tool.main([str(tmp_path / "m.pth"), "--no-verify", "--force"]) == 0
    assert out.read_bytes() != b"an earlier export"
