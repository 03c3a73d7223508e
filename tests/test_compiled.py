"""Compiled inference (Inductor, frozen weights) against the eager model."""

import os
import shutil

import numpy as np
import pytest
import torch

from dsod.config import config_from_dict
from dsod.inference import Detector
from dsod.models.compiled import compile_for_inference
from dsod.models.detector import build_model
from dsod.models.fuse import fuse_for_inference

from test_fuse import TINY, assert_same_outputs_and_detections, trained_looking

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                reason="torch.compile on the CPU needs a C++ compiler")


def test_compiled_inference_gives_the_eager_detections():
    config = config_from_dict(TINY)
    model = fuse_for_inference(trained_looking(build_model(config)))
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    assert_same_outputs_and_detections(config, model, compile_for_inference(model), images,
                                       [(64, 64), (90, 70)])


def test_detector_with_compile_finds_what_the_eager_detector_finds():
    config = config_from_dict(TINY)
    model = fuse_for_inference(trained_looking(build_model(config)))
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    eager = Detector(model, config, score_threshold=0.0)(image)
    compiled = Detector(model, config, score_threshold=0.0, compile=True)
    found = compiled(image)
    assert compiled._compiled is not None and len(eager) > 0
    assert found.labels.tolist() == eager.labels.tolist()
    np.testing.assert_allclose(found.boxes, eager.boxes, atol=1e-3)


def test_a_failed_compilation_is_one_clear_error():
    from torch._inductor import config as inductor_config

    from dsod.models.compiled import CompileError

    config = config_from_dict(TINY)
    compiled = compile_for_inference(fuse_for_inference(build_model(config)))
    no_compiler = {"force_disable_caches": True, "cpp.cxx": (None, "/nonexistent/g++")}
    with inductor_config.patch(no_compiler), torch.inference_mode():
        with pytest.raises(CompileError, match="No working C\\+\\+ compiler"):
            compiled(torch.randn(3, 3, 64, 64))
