"""The harness of the A/B scripts that swap one piece of code: DSOD300 (plain dense
layers, channels-last, CPU) timed with each variant in turn, alternated in one process so
that both see the same machine load; medians and the ratio of the second to the first.
A variant is a call that puts it in place in the network it is given."""

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from benchmarks.models import TrainingStep, prepare_model, random_images
from dsod.config import load_config
from dsod.runtime.host_memory import reuse_freed_memory


def side_by_side(
    name: str,
    run: Callable[[], object],
    network: nn.Module,
    variants: dict[str, Callable[[nn.Module], object]],
    rounds: int,
) -> None:
    """Print the median time of ``run`` under each variant (``variants``: label -> a call
    that puts that variant in place in ``network``), alternating them ``rounds`` times."""
    times: dict[str, list[float]] = {label: [] for label in variants}
    for _ in range(rounds):
        for label, use in variants.items():
            use(network)
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    (first, a), (second, b) = ((k, statistics.median(v)) for k, v in times.items())
    print(
        f"{name}: {first} {a * 1e3:.1f} ms, {second} {b * 1e3:.1f} ms, ratio {b / a:.3f}",
        flush=True,
    )


def bf16_training_and_inference(variants: dict[str, Callable[[nn.Module], object]]) -> None:
    """A bf16 training step at batch 8 (5 rounds) and bf16 inference at batch 1 (9) and 8
    (5), each after one untimed call per variant."""
    reuse_freed_memory()
    config = load_config("configs/dsod300_voc.yaml", ["model.memory_efficient=false"])
    step = TrainingStep(config, torch.device("cpu"), 8, "bf16", True)
    for use in variants.values():
        use(step.model)
        step()
    side_by_side("bf16 training step, batch 8", step, step.model, variants, 5)
    network = prepare_model(
        config, torch.device("cpu"), True, for_inference=True, precision="bf16"
    )
    for batch, rounds in ((1, 9), (8, 5)):
        images = random_images(batch, 300, torch.device("cpu"), True)
        with torch.inference_mode():
            for use in variants.values():
                use(network.module)
                network(images)
            side_by_side(
                f"bf16 inference, batch {batch}",
                lambda: network(images),
                network.module,
                variants,
                rounds,
            )
