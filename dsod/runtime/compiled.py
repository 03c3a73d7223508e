"""Compile: the whole network (every paper block at once) through ``torch.compile``, with
frozen weights for inference, and for training.

With ``freezing`` Inductor treats the parameters and buffers as constants: it folds them,
reorders the convolution weights once into oneDNN's blocked layouts (instead of at every
call) and fuses the elementwise work before a convolution (the per-channel clamp of a
folded BN-ReLU, a ReLU, the concatenation that feeds them) into one pass. Compiling takes
a while at the first call with each input shape and precision. For training, compiling
fuses each BN's statistics, normalisation and ReLU (and their backward) into few kernels
over the growing concatenations. What each gains and costs where it was measured is in
docs/PERFORMANCE.md. Compiled, the network must give the eager network's outputs and
gradients up to float rounding (``tests/test_compiled.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch._dynamo.exc import TorchDynamoException
from torch._inductor import config as inductor_config


class CompileError(RuntimeError):
    """``torch.compile`` could not compile the network (no C++ compiler, no Triton, ...)."""


class CompiledModel(nn.Module):
    """``model`` compiled by Inductor, one static graph per input shape: see
    :func:`compile_for_inference` (``frozen``) and :func:`compile_for_training`.

    Inductor reads its ``freezing`` setting when it compiles, which happens at the first call
    with each new input shape; so each call sets it, for this model only, around the call
    (``torch.compile``'s ``options`` do not reach that setting). With ``fullgraph`` a part
    that torch.compile cannot trace is an error instead of a piece run eagerly.
    """

    def __init__(self, model: nn.Module, frozen: bool, fullgraph: bool = False) -> None:
        super().__init__()
        self.compiled = torch.compile(model, dynamic=False, fullgraph=fullgraph)
        self.frozen = frozen

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The compiled model's outputs; compiles at the first call with each input shape.

        Raises:
            CompileError: compiling failed; the message holds torch's reason (for example
                "No working C++ compiler found").
        """
        try:
            with inductor_config.patch(freezing=self.frozen):
                return self.compiled(*args, **kwargs)
        except TorchDynamoException as error:
            raise CompileError(
                f"torch.compile could not compile the network: "
                f"{_root_cause(error)} (run without compiling: compile=False, "
                f"or no --compile)"
            ) from error


def _root_cause(error: BaseException) -> str:
    """``Type: first line`` of the innermost exception behind ``error`` (Dynamo wraps the
    backend's error, and its own message starts with boilerplate)."""
    seen = {id(error)}
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        error = inner
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def compile_for_inference(model: nn.Module) -> CompiledModel:
    """``model`` compiled by Inductor with frozen weights, one static graph per input shape,
    dtype and autocast setting (compiled at its first call with each).

    Run the result in eval mode under ``torch.no_grad`` or ``torch.inference_mode``: only
    then are the weights frozen. Compiling copies some weights into the graph (the
    reordered convolution weights) and keeps references to others: do not change them
    afterwards; load new weights into a new model and compile that. Outputs equal the eager
    model's up to float rounding (``tests/test_compiled.py``). Needs a C++ compiler on the
    CPU and Triton on CUDA, as ``torch.compile`` does.
    """
    return CompiledModel(model, frozen=True)


def compile_for_training(model: nn.Module) -> CompiledModel:
    """``model`` compiled by Inductor for training: forward and backward, one static graph
    per input shape (compiled at the first call with each; the trainer's micro-batches all
    have one shape), to be wrapped in ``DistributedDataParallel`` if distributed. The
    parameters stay the model's own, so the optimizer, checkpoints and evaluation use
    ``model`` as before. Outputs and gradients equal the eager model's up to float rounding
    (``tests/test_compiled.py``). Needs a C++ compiler on the CPU and Triton on CUDA.

    The whole forward pass must compile as one graph (``fullgraph``): a memory-efficient
    dense layer left to run eagerly inside a compiled graph would have its recomputation
    update the BN running statistics a second time. Where something cannot be traced
    (a layer of one's own, say), the first step raises :class:`CompileError` instead.
    """
    return CompiledModel(model, frozen=False, fullgraph=True)
