"""A model's shape, size and arithmetic, as printed by ``tools/summary.py``."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from dsod.config import Config
from dsod.engine.builders import build_model, build_priors
from dsod.models.detector import count_parameters


def model_summary(config: Config) -> dict[str, Any]:
    """Describe the detector of ``config`` for one image.

    Returns:
        ``params`` (learnable parameters), ``buffers`` (BN running statistics and other
        non-learnable values), ``priors``, ``sources`` (``[C, H, W]`` per prediction
        source), ``gflops`` (10^9 floating-point operations of one forward pass at the
        config's input size, a multiply-add counted as two, by
        ``torch.utils.flop_counter``), ``num_classes`` and ``input_size``.
    """
    model = build_model(config).eval()
    size = config.model.input_size
    image = torch.zeros(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        if hasattr(model, "forward_sources"):
            sources = model.forward_sources(image)
            model.heads(sources)
        else:
            sources = model.features(image)
            model.heads(sources)
    return {
        "name": config.name,
        "arch": config.model.arch,
        "input_size": size,
        "num_classes": config.num_classes,
        "params": count_parameters(model),
        "buffers": sum(b.numel() for b in model.buffers()),
        "priors": build_priors(config).num_priors,
        "sources": [list(s.shape[1:]) for s in sources],
        "gflops": counter.get_total_flops() / 1e9,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a short human-readable table."""
    lines = [
        f"{summary['name']} ({summary['arch']}, {summary['input_size']}x"
        f"{summary['input_size']}, {summary['num_classes']} classes with background)",
        "source  channels @ size",
    ]
    for index, (c, h, w) in enumerate(summary["sources"]):
        lines.append(f"  {index + 1}     {c:5d} @ {h}x{w}")
    lines += [
        f"priors      {summary['priors']:,}",
        f"parameters  {summary['params']:,} learnable (+{summary['buffers']:,} buffers)",
        f"GFLOPs      {summary['gflops']:.2f} per image (multiply-add = 2 FLOPs)",
    ]
    return "\n".join(lines)
