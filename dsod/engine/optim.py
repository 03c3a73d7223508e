"""SGD with the reference's weight-decay rules, and the iteration-based schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dsod.config import SolverConfig
from dsod.models.layers import L2Norm


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    decay_backbone_bn: bool,
    l2norm_lr: float | None = None,
    l2norm_per_head: bool = False,
) -> list[dict]:
    """Split parameters into a decayed and an undecayed group, and where ``l2norm_lr`` is
    given, a third group of the heads' L2Norm scales.

    The reference decays every convolution and the L2Norm scales, and the BN scale and shift
    of everything but the heads (``decay_backbone_bn``); the heads' BN is never decayed.
    With ``decay_backbone_bn=False`` no BN parameter is decayed. With ``l2norm_lr`` the
    heads' L2Norm scales learn at that fixed rate (not scaled with the batch), without
    weight decay: the scale sets how fast the heads learn, so it finds its own value
    instead of keeping the one it starts at (``solver.l2norm_lr``); with
    ``l2norm_per_head`` that group is marked ``"mean_gradient"``, which
    :func:`average_gradients` applies: each head's scales then learn as one number.
    """
    decay, no_decay, scales = [], [], []
    for module_name, module in model.named_modules():
        is_head = module_name.startswith("heads") or ".heads" in module_name
        for param in module.parameters(recurse=False):
            if not param.requires_grad:
                continue
            if l2norm_lr is not None and is_head and isinstance(module, L2Norm):
                scales.append(param)
            elif _is_norm(module) and (is_head or not decay_backbone_bn):
                no_decay.append(param)
            else:
                decay.append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if l2norm_lr is not None:
        group = {"params": scales, "weight_decay": 0.0, "lr": l2norm_lr}
        if l2norm_per_head:
            group["mean_gradient"] = True
        groups.append(group)
    return groups


@torch.no_grad()
def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Give every entry of each parameter of a group marked ``"mean_gradient"`` the mean
    of that parameter's gradient (call before the update): the entries of a scale then
    move together, as one number, and keep the sizes they have relative to each other."""
    for group in optimizer.param_groups:
        if group.get("mean_gradient"):
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.copy_(param.grad.mean().expand_as(param.grad))


def scaled_lr(solver: SolverConfig) -> float:
    """The learning rate for the effective batch: ``lr * batch_size / base_batch``."""
    return solver.lr * solver.batch_size / solver.base_batch


def smaller_steps(solver: SolverConfig | None = None, l2norm_scale: float | None = None) -> str:
    """What to try when the steps are too large for a run's start (the loss rises or turns
    non-finite), naming the run's own values where ``solver`` is given: a lower learning
    rate, a lower starting scale of the heads' L2Norm where one was set by hand
    (``l2norm_scale``, heads without BN), a lower rate for those scales where they learn at
    their own, or a longer warm-up."""
    if solver is None:
        return "try a lower solver.lr or a longer solver.warmup_iters"
    lower = [f"a lower solver.lr ({solver.lr:g} here)"]
    if l2norm_scale is not None:
        lower.append(f"a lower model.l2norm_scale ({l2norm_scale:g} here)")
    if solver.l2norm_lr is not None:
        lower.append(f"a lower solver.l2norm_lr ({solver.l2norm_lr:g} here)")
    return f"try {', '.join(lower)} or a longer solver.warmup_iters ({solver.warmup_iters:g} here)"


def build_optimizer(model: nn.Module, solver: SolverConfig) -> torch.optim.SGD:
    """SGD with momentum, the scaled learning rate and the reference's decay groups (and
    the heads' L2Norm scales at ``solver.l2norm_lr`` where it is set, one number a head
    with ``solver.l2norm_per_head``)."""
    groups = parameter_groups(
        model,
        solver.weight_decay,
        solver.decay_backbone_bn,
        solver.l2norm_lr,
        solver.l2norm_per_head,
    )
    return torch.optim.SGD(groups, lr=scaled_lr(solver), momentum=solver.momentum)


def lr_factor(
    iteration: int, steps: Sequence[int], gamma: float, warmup_iters: int, warmup_factor: float
) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based).

    Linear warm-up from ``warmup_factor`` to 1 over ``warmup_iters``, then ``gamma`` to the
    power of the number of ``steps`` passed.
    """
    factor = gamma ** sum(iteration >= step for step in steps)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, solver: SolverConfig
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler: call ``step()`` once after every optimizer step.

    Steps and warm-up given as fractions of ``max_iter`` are resolved here
    (:meth:`~dsod.config.SolverConfig.schedule`)."""
    warmup_iters, steps = solver.schedule()
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: lr_factor(it, steps, solver.gamma, warmup_iters, solver.warmup_factor),
    )


def schedule_warnings(solver: SolverConfig) -> list[str]:
    """What is wrong with a schedule that still runs: a warm-up or lr step at or beyond
    ``max_iter`` (a shortened run whose schedule was not shortened with it, or a run so
    short that a fraction rounds to its end). Giving the schedule as fractions is
    suggested only where it was given in iterations."""
    warmup_iters, steps = solver.schedule()
    problems = []
    in_iterations = False

    def given(raw: float, resolved: int) -> str:
        return "" if raw >= 1 else f" ({raw:g} of {solver.max_iter} rounds to {resolved})"

    if warmup_iters >= solver.max_iter:
        in_iterations |= solver.warmup_iters >= 1
        problems.append(
            f"solver.warmup_iters ({warmup_iters}"
            f"{given(solver.warmup_iters, warmup_iters)}) is not below "
            f"solver.max_iter ({solver.max_iter}): the whole run stays in warm-up, "
            f"below the full learning rate"
        )
    late = [(raw, s) for raw, s in zip(solver.steps, steps) if s >= solver.max_iter]
    if late:
        in_iterations |= any(raw >= 1 for raw, _ in late)
        problems.append(
            f"solver.steps {[s for _, s in late]}"
            f"{''.join(given(raw, s) for raw, s in late if raw < 1)} lie at or "
            f"beyond solver.max_iter ({solver.max_iter}): the learning rate never "
            f"drops there"
        )
    if in_iterations:
        problems.append(
            "give solver.steps and solver.warmup_iters as fractions of max_iter "
            "(e.g. steps: [0.7, 0.9], warmup_iters: 0.1) to shorten a run coherently"
        )
    return problems
