"""Side by side: DSOD300's in-place ReLUs through the int16 bits of bf16 tensors
(``dsod.models.layers.relu_``) against ``F.relu(inplace=True)``, in one process, the two
alternated: a bf16 training step at batch 8 and bf16 inference at batch 1 and 8 (CPU).
Run from the repository root: ``python docs/ab/relu_bf16.py``."""
import statistics
import time

import torch
from torch.nn import functional as F

from dsod.benchmarks.models import TrainingStep, prepare_model, random_images
from dsod.config import load_config
from dsod.engine.host_memory import reuse_freed_memory
from dsod.models import densenet, layers

reuse_freed_memory()
fast = layers.relu_


def plain(x):
    return F.relu(x, inplace=True)


def use(relu):
    densenet.relu_ = layers.relu_ = relu
    import dsod.models.fuse as fuse
    fuse.relu_ = relu


def side_by_side(name, run, rounds):
    times = {"F.relu": [], "int16 bits": []}
    for _ in range(rounds):
        for label, relu in (("F.relu", plain), ("int16 bits", fast)):
            use(relu)
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    a, b = (statistics.median(times[k]) for k in ("F.relu", "int16 bits"))
    print(f"{name}: F.relu {a * 1e3:.1f} ms, int16 bits {b * 1e3:.1f} ms, ratio {b / a:.3f}",
          flush=True)


config = load_config("configs/dsod300_voc.yaml", ["model.memory_efficient=false"])
step = TrainingStep(config, torch.device("cpu"), 8, "bf16", True)
for relu in (plain, fast):
    use(relu)
    step()
side_by_side("bf16 training step, batch 8", step, 5)
model = prepare_model(config, torch.device("cpu"), True, for_inference=True, precision="bf16")
for batch, rounds in ((1, 9), (8, 5)):
    images = random_images(batch, 300, torch.device("cpu"), True)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        model(images)
        side_by_side(f"bf16 inference, batch {batch}", lambda: model(images), rounds)
