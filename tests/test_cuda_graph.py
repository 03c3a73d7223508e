"""CUDA-graph replay gives the eager network's outputs and detections.

The CUDA cases need a GPU and are skipped without one (CI has none); they were run on an
H100 (docs/PERFORMANCE.md). The CPU case checks the fallback that lets one object serve both.
"""

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from test_fuse import trained_looking

from dsod.config import config_from_dict
from dsod.engine.builders import build_model
from dsod.inference import Detector
from dsod.runtime.cuda_graph import CUDAGraphForward
from dsod.runtime.fold import fuse_for_inference

TINY = {"model": dict(TINY_MODEL), "priors": {"steps": None}}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tiny_inference_model(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return fuse_for_inference(trained_looking(build_model(config_from_dict(TINY)))).to(device)


def test_cpu_inputs_run_eagerly_and_record_nothing():
    model = _tiny_inference_model("cpu")
    graphed = CUDAGraphForward(model)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
    for got, want in zip(graphed(images), expected):
        assert torch.equal(got, want)
    assert graphed.recorded_shapes == []


@needs_cuda
def test_replay_matches_eager_for_fresh_inputs_and_shapes():
    model = _tiny_inference_model("cuda")
    graphed = CUDAGraphForward(model, max_graphs=2)
    kept = None
    for batch in (1, 3, 1, 3, 2):  # the third shape evicts the oldest recording
        images = torch.randn(batch, 3, 64, 64, device="cuda") * 60
        with torch.inference_mode():
            expected = model(images)
        got = graphed(images)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        if kept is None:
            kept = (images, [t.clone() for t in got], got)
    assert graphed.recorded_shapes == [(3, 3, 64, 64), (2, 3, 64, 64)]
    # Outputs returned earlier are copies: later replays did not overwrite them.
    for earlier, snapshot in zip(kept[2], kept[1]):
        assert torch.equal(earlier, snapshot)


@needs_cuda
def test_replay_under_fp16_autocast_matches_eager_autocast():
    model = _tiny_inference_model("cuda").to(memory_format=torch.channels_last)
    graphed = CUDAGraphForward(model, autocast_dtype=torch.float16)
    images = (torch.randn(4, 3, 64, 64, device="cuda") * 60).contiguous(
        memory_format=torch.channels_last
    )
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        expected = model(images)
    got = graphed(images)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g.float(), e.float(), rtol=1e-3, atol=1e-3)


@needs_cuda
def test_detector_with_cuda_graphs_gives_the_same_detections():
    config = config_from_dict(TINY)
    model = _tiny_inference_model("cuda")
    eager = Detector(model, config, "cuda", score_threshold=0.05, batch_size=2)
    graphed = Detector(model, config, "cuda", score_threshold=0.05, batch_size=2, cuda_graphs=True)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((64, 64), (120, 90), (50, 70))
    ]
    for _ in range(2):  # the first call records, the second replays
        for a, b in zip(eager(images), graphed(images)):
            assert len(a) > 0 and a.labels.tolist() == b.labels.tolist()
            np.testing.assert_allclose(b.boxes, a.boxes, rtol=1e-5, atol=1e-3)
            np.testing.assert_allclose(b.scores, a.scores, rtol=1e-5, atol=1e-6)
