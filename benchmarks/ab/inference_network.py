"""Side by side: the inference network of 0d6f1be (fuse_for_inference: BN folded, frozen
BNs, autocast casting the weights at every call) against ``for_inference`` (clamp fold,
weights stored in the autocast dtype), same random weights with trained-looking BNs,
alternated in one process; the figures of docs/PERFORMANCE.md. Run from the repository
root:

    mkdir -p /tmp/ab && git show 0d6f1be:dsod/models/fuse.py > /tmp/ab/fuse_old.py
    python benchmarks/ab/inference_network.py
"""

import statistics
import sys
import time

import torch

sys.path.insert(0, "/tmp/ab")
import fuse_old
from torch import nn

from dsod.config import load_config
from dsod.engine.builders import build_model
from dsod.runtime.host_memory import reuse_freed_memory
from dsod.runtime.speed_paths import for_inference

reuse_freed_memory()
torch.manual_seed(0)


def trained_looking(m):
    for x in m.modules():
        if isinstance(x, nn.BatchNorm2d):
            x.running_mean.uniform_(-0.5, 0.5)
            x.running_var.uniform_(0.5, 2.0)
            x.weight.data.uniform_(0.5, 1.5)
            x.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def run(cfg, dtype_name, batch, rounds=5, reps=3):
    model = trained_looking(build_model(load_config(cfg)))
    dtype = torch.bfloat16 if dtype_name == "bf16" else None
    old = fuse_old.fuse_for_inference(model).to(memory_format=torch.channels_last)
    new = for_inference(model, channels_last=True, dtype=dtype)
    x = (torch.randn(batch, 3, 300, 300) * 60).contiguous(memory_format=torch.channels_last)
    ctx = lambda: (
        torch.autocast("cpu", torch.bfloat16) if dtype else torch.autocast("cpu", enabled=False)
    )
    times = {"old": [], "new": []}
    with torch.inference_mode(), ctx():
        a, b = old(x), new(x)
        diff = (a[0].float() - b[0].float()).abs().max().item()
        for net in (old, new):
            net(x)
        for _ in range(rounds):
            for name, net in (("old", old), ("new", new)):
                t = time.perf_counter()
                for _ in range(reps):
                    net(x)
                times[name].append((time.perf_counter() - t) / reps * 1000)
    o, n = statistics.median(times["old"]), statistics.median(times["new"])
    print(
        f"{cfg.split('/')[-1]:28s} {dtype_name} b{batch}: old {o:7.1f} ms  new {n:7.1f} ms  "
        f"new/old {n / o:.3f}  max|dlogit| {diff:.2g}",
        flush=True,
    )


for cfg in ("configs/dsod300_voc.yaml", "configs/ssd300_vgg16_voc.yaml"):
    for dt in ("fp32", "bf16"):
        run(cfg, dt, 1)
        run(cfg, dt, 8, rounds=3, reps=1)
