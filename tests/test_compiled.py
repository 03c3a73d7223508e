"""Compiled inference (Inductor, frozen weights) against the eager model."""

import os
import shutil

import numpy as np
import pytest
import torch
from conftest import assert_same_detections
from test_fuse import TINY, assert_same_outputs_and_detections, trained_looking

from dsod.config import config_from_dict
from dsod.engine.builders import build_model
from dsod.inference import Detector
from dsod.runtime.compiled import CompiledModel, compile_for_inference
from dsod.runtime.fold import fuse_for_inference
from dsod.runtime.speed_paths import for_training

pytestmark = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="torch.compile on the CPU needs a C++ compiler",
)


def test_compiled_inference_gives_the_eager_detections():
    config = config_from_dict(TINY)
    model = fuse_for_inference(trained_looking(build_model(config)))
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    assert_same_outputs_and_detections(
        config, model, compile_for_inference(model), images, [(64, 64), (90, 70)]
    )


def test_detector_with_compile_finds_what_the_eager_detector_finds():
    config = config_from_dict(TINY)
    model = fuse_for_inference(trained_looking(build_model(config)))
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    eager = Detector(model, config, score_threshold=0.0)(image)
    compiled = Detector(model, config, score_threshold=0.0, compile=True)
    found = compiled(image)
    assert isinstance(compiled.network.module, CompiledModel) and len(eager) > 0
    assert_same_detections(eager, found, compiled.postprocessor)


def test_a_failed_compilation_is_one_clear_error():
    from torch._inductor import config as inductor_config

    from dsod.runtime.compiled import CompileError

    config = config_from_dict(TINY)
    compiled = compile_for_inference(fuse_for_inference(build_model(config)))
    no_compiler = {"force_disable_caches": True, "cpp.cxx": (None, "/nonexistent/g++")}
    with inductor_config.patch(no_compiler), torch.inference_mode():
        with pytest.raises(CompileError, match="No working C\\+\\+ compiler"):
            compiled(torch.randn(3, 3, 64, 64))


def test_trainer_with_compile_takes_the_eager_steps(tmp_path, caplog):
    """Step 2's loss follows step 1's compiled forward, backward and update; with the
    memory-efficient dense layers (recomputed in the backward pass) the BN running
    statistics are updated once, as eagerly."""
    from conftest import tiny_config
    from test_training import losses

    from dsod.engine.trainer import Trainer

    states = {}
    for name, compile in (("eager", False), ("compiled", True)):
        config = tiny_config(
            tmp_path,
            solver={"max_iter": 2},
            train={"compile": compile},
            model={"memory_efficient": True},
        )
        trainer = Trainer(config, tmp_path / name, torch.device("cpu"), progress=False)
        assert isinstance(trainer.network.module, CompiledModel) is compile
        with caplog.at_level("INFO", logger="dsod.engine.trainer"):
            trainer.run()
        assert ("first step compiles" in caplog.text) is compile
        caplog.clear()
        states[name] = trainer.model.state_dict()
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert list(eager) == list(compiled) == [1, 2]
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=1e-4)
    for key, value in states["eager"].items():
        if "running" in key or "num_batches" in key:
            torch.testing.assert_close(states["compiled"][key], value, rtol=1e-3, atol=1e-4)


def test_a_part_that_cannot_be_traced_stops_compiled_training(monkeypatch):
    """Left to run eagerly inside the compiled graph, a memory-efficient dense layer would
    update its BN statistics twice (its recomputation would run without the guard that
    restores them); compiled training must refuse instead."""
    from dsod.runtime import recompute
    from dsod.runtime.compiled import CompileError, compile_for_training

    untraceable = recompute.recomputed

    def recomputed_with_a_graph_break(function, module, *inputs):
        torch._dynamo.graph_break()
        return untraceable(function, module, *inputs)

    monkeypatch.setattr(recompute, "recomputed", recomputed_with_a_graph_break)
    config = config_from_dict(TINY)
    model = for_training(build_model(config), memory_efficient=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "num_batches" in k}
    with pytest.raises(CompileError, match="torch.compile could not compile"):
        compile_for_training(model)(torch.randn(2, 3, 64, 64))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # nothing ran
