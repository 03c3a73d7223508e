"""An exponential moving average of the weights, for evaluation and checkpoints.

Short runs from scratch end with weights that still move a lot from step to step; their
average over the last steps detects better (``docs/RESULTS.md``). The average follows the
model's parameters and buffers (BN statistics) after every step, through PyTorch's
:class:`~torch.optim.swa_utils.AveragedModel`, with a decay that grows from 0 (the first
update copies the weights) to its final value:
``decay_n = min(decay, (1 + n) / (10 + n))`` after ``n`` updates.

The run gives the average a time constant as a fraction of its length (``solver.ema``):
``decay = 1 - 1 / (ema * max_iter)``, so a longer run averages over more steps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["WeightAverage", "ema_decay"]


def ema_decay(fraction: float, max_iter: int) -> float:
    """The decay whose time constant is ``fraction`` of ``max_iter`` steps (at least one
    step: a decay of 0 copies the weights)."""
    return max(0.0, 1.0 - 1.0 / max(1.0, fraction * max_iter))


class WeightAverage:
    """The moving average of ``model``'s weights (a copy; ``model`` is not changed)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay

        @torch.no_grad()
        def update(
            averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor
        ) -> None:
            n = float(updates)
            weight = 1.0 - min(self.decay, (1.0 + n) / (10.0 + n))
            floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
            if floats:
                torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
            for a, c in zip(averaged, current):
                if not a.is_floating_point():  # BN's num_batches_tracked
                    a.copy_(c)

        self.averaged = AveragedModel(model, multi_avg_fn=update, use_buffers=True)
        self.averaged.module.requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        """The averaged network (same class and keys as the trained one)."""
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average (after each step)."""
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        """``{"weights": the averaged network's state_dict, "updates": n}``."""
        return {"weights": self.model.state_dict(), "updates": self.updates}
