"""The fast paths on a GPU give what the reference path gives on the CPU.

The CUDA cases need a GPU and are skipped without one (CI has none); docs/PERFORMANCE.md
says where they were last run. The gradient case also runs on the CPU's bf16. What they
guard: the inference network (BNs folded into clamps and convolutions, channels-last,
weights stored in the autocast dtype) under fp32, fp16 and bf16 on cuDNN, and training
gradients under reduced precision where a strided 3x3
convolution meets a 1x1 map (see :class:`dsod.runtime.conv.CentreTapConv2d`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, assert_same_detections
from test_fuse import _bn, trained_looking
from torch import nn

from dsod.config import config_from_dict, config_to_dict
from dsod.engine.builders import build_model, build_postprocessor
from dsod.engine.checkpoint import save_atomic
from dsod.inference import Detector
from dsod.runtime.compiled import CompiledModel
from dsod.runtime.fold import ClampedConv1x1
from dsod.runtime.speed_paths import for_inference, for_training

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

TINY = {
    "model": dict(TINY_MODEL),
    "priors": {"steps": None},
    "data": {"class_names": ["a", "b"]},
    "test": {"batch_size": 2},
}
REDUCED = {"fp16": torch.float16, "bf16": torch.bfloat16}


@contextlib.contextmanager
def exact_fp32():
    """cuDNN and cuBLAS in true fp32 (no TF32), so that fp32 results compare tightly."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _images(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(seed)) * 60


@needs_cuda
def test_inference_network_on_cuda_gives_the_cpu_training_paths_detections():
    config = config_from_dict(TINY)
    model = trained_looking(build_model(config))
    images = _images()
    with torch.no_grad():  # autograd off, eval mode: the CPU reference
        ref_logits, ref_offsets = model(images)
    network = for_inference(model, channels_last=True).cuda()
    with exact_fp32(), torch.inference_mode():
        logits, offsets = network(images.cuda().contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(logits.cpu(), ref_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(offsets.cpu(), ref_offsets, rtol=1e-4, atol=1e-4)
    post = build_postprocessor(config)
    sizes = [(64, 64)] * len(images)
    for a, b in zip(
        post(ref_logits, ref_offsets, sizes), post(logits.cpu(), offsets.cpu(), sizes)
    ):
        assert len(a) > 0
        assert_same_detections(a, b, post)


@needs_cuda
@pytest.mark.parametrize("precision", sorted(REDUCED))
def test_weights_stored_in_the_autocast_dtype_on_cuda(precision):
    """Stored in fp16/bf16, the weights give what autocast's own casts give, and the scores
    stay near fp32's (rounded, not another function)."""
    dtype = REDUCED[precision]
    model = trained_looking(build_model(config_from_dict(TINY)))
    plain = for_inference(model, channels_last=True).cuda()
    stored = for_inference(model, channels_last=True, dtype=dtype).cuda()
    assert stored.heads.heads[0].conf.weight.dtype == dtype
    images = _images(4).cuda().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with exact_fp32():
            reference = plain(images)[0].float().softmax(-1)
        with torch.autocast("cuda", dtype=dtype):
            cast, kept = plain(images), stored(images)
    for a, b in zip(cast, kept):
        assert a.dtype == b.dtype
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-3, atol=1e-3)
    difference = (kept[0].float().softmax(-1) - reference).abs().max().item()
    assert 0 < difference < 0.05


@needs_cuda
def test_clamped_conv_switch_points_beyond_fp16_range_on_cuda():
    norm = _bn([1e-5, 1e-5, -1e-5], [-1.0, 1.0, 1.0])  # always off, always on, always on
    conv = nn.Conv2d(3, 3, 1, bias=False)
    conv.weight.data.copy_(torch.eye(3).view(3, 3, 1, 1))
    x = torch.tensor([[100.0, -100.0, 5.0]]).view(1, 3, 1, 1)
    expected = conv(torch.relu(norm(x)))
    unit = ClampedConv1x1(norm, conv).cuda().half()
    out = unit(x.cuda().half())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float().cpu(), expected, rtol=1e-3, atol=1e-3)


def _gradients(
    model: nn.Module,
    images: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """All parameter gradients of a fixed linear function of the outputs, flattened."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(
        images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None
    ):
        logits, offsets = model(images)
    loss = (logits.float() * weights[0]).sum() + (offsets.float() * weights[1]).sum()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize(
    "device, precision",
    [
        ("cpu", "bf16"),
        pytest.param("cuda", "fp16", marks=needs_cuda),
        pytest.param("cuda", "bf16", marks=needs_cuda),
    ],
)
def test_reduced_precision_gradients_follow_fp32(device, precision):
    """The 64x64 model's last prediction layers convolve 1x1 maps with a strided 3x3 kernel,
    where PyTorch's bf16 weight gradient on the CPU was garbage (up to 1e31). Under fp16/bf16
    autocast every gradient must point where fp32's points, run after run. (BNs in eval
    mode: with batch statistics of 4 values per channel, the from-scratch network's early
    gradients turn with any rounding, fp32's own included, and would test nothing.)"""
    torch.manual_seed(0)
    model = for_training(trained_looking(build_model(config_from_dict(TINY)))).to(device)
    model = model.to(memory_format=torch.channels_last)
    images = _images(4).to(device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        logits, offsets = model(images)
    generator = torch.Generator().manual_seed(1)
    weights = tuple(
        torch.randn(t.shape, generator=generator).to(device) for t in (logits, offsets)
    )
    with exact_fp32():
        reference = _gradients(model, images, weights, None)
    first = _gradients(model, images, weights, REDUCED[precision])
    second = _gradients(model, images, weights, REDUCED[precision])
    for grads in (first, second):
        assert torch.isfinite(grads).all()
        assert grads.abs().max() < 2 * reference.abs().max()
        cosine = torch.nn.functional.cosine_similarity(grads, reference, dim=0).item()
        assert cosine > 0.999, cosine
    assert torch.nn.functional.cosine_similarity(first, second, dim=0).item() > 0.9999


@needs_cuda
def test_detector_from_checkpoint_on_cuda_with_fp16_and_graphs(tmp_path):
    """The detector a user loads on a GPU (BNs folded, fp16 weights, a recorded CUDA graph)
    finds what the CPU fp32 detector finds, in boxes and scores."""
    torch.manual_seed(0)
    config = config_from_dict(TINY)
    model = trained_looking(build_model(config))
    save_atomic(
        {"model": model.state_dict(), "config": config_to_dict(config)}, tmp_path / "m.pth"
    )
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((64, 64), (90, 120))]
    cpu = Detector.from_checkpoint(tmp_path / "m.pth", score_threshold=0.0)
    gpu = Detector.from_checkpoint(
        tmp_path / "m.pth", device="cuda", score_threshold=0.0, amp="fp16", cuda_graphs=True
    )
    for _ in range(2):  # the first call records the graph, the second replays it
        for a, b in zip(cpu(images), gpu(images)):
            assert len(a) > 0 and abs(len(a) - len(b)) <= max(2, len(a) // 20)
            top = min(len(a), len(b), 20)
            np.testing.assert_allclose(
                np.sort(b.scores)[::-1][:top], np.sort(a.scores)[::-1][:top], atol=0.02
            )
            assert (b.boxes[:, 2] <= b.image_size[0] + 1e-3).all()


@needs_cuda
def test_detector_replays_the_compiled_network_from_cuda_graphs():
    """compile=True with cuda_graphs=True records the compiled network (the benchmark's
    fastest GPU path); its detections are the eager detector's up to rounding."""
    config = config_from_dict(TINY)
    model = for_inference(trained_looking(build_model(config))).cuda()
    eager = Detector(model, config, "cuda", score_threshold=0.05, batch_size=2)
    fast = Detector(
        model, config, "cuda", score_threshold=0.05, batch_size=2, cuda_graphs=True, compile=True
    )
    assert isinstance(fast.network.module, CompiledModel)
    assert fast.network.graphed.module is fast.network.module
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((64, 64), (120, 90), (50, 70))
    ]
    with exact_fp32():
        for _ in range(2):  # the first call compiles and records, the second replays
            for a, b in zip(eager(images), fast(images)):
                assert len(a) > 0
                assert_same_detections(a, b, eager.postprocessor)
