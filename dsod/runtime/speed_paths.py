"""The switch between the paper's modules and their faster twins.

Each table maps a paper module to its twin: a subclass that keeps the module's attributes,
parameters and state_dict keys and only replaces ``forward``, with the same numbers. A
module is switched by changing its class in place, so the optimiser's parameters and the
checkpoints stay valid. :func:`for_training` switches a model for training, in place;
:func:`for_inference` makes an inference copy (BNs folded, shared-buffer dense blocks,
16-bit ReLU, layout, weights in the autocast dtype).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dsod.models.densenet import DenseBlock, DenseLayer, Stem
from dsod.models.layers import L2Norm
from dsod.runtime.conv import CentreTapConv2d
from dsod.runtime.fold import fold_batch_norms
from dsod.runtime.l2norm import ScaledL2Norm
from dsod.runtime.recompute import RecomputedDenseLayer, RecomputedStem
from dsod.runtime.relu import SignBitReLU
from dsod.runtime.shared_block import SharedBufferDenseBlock

Table = dict[type[nn.Module], type[nn.Module]]

TRAINING: Table = {nn.Conv2d: CentreTapConv2d, nn.ReLU: SignBitReLU, L2Norm: ScaledL2Norm}
RECOMPUTED: Table = {DenseLayer: RecomputedDenseLayer, Stem: RecomputedStem}
INFERENCE: Table = {nn.ReLU: SignBitReLU, DenseBlock: SharedBufferDenseBlock}
_PAPER: Table = {
    twin: paper for table in (TRAINING, RECOMPUTED, INFERENCE) for paper, twin in table.items()
}


def switch(model: nn.Module, table: Table) -> nn.Module:
    """Give every module of ``model`` whose exact class is a key of ``table`` the class
    ``table`` maps it to, in place; returns ``model``."""
    for module in model.modules():
        twin = table.get(type(module))
        if twin is not None:
            module.__class__ = twin
    return model


def for_training(
    model: nn.Module, *, speed_paths: bool = True, memory_efficient: bool = False
) -> nn.Module:
    """Switch ``model`` to the training paths, in place; returns ``model``.

    With ``speed_paths`` (``train.speed_paths``): the centre-tap convolution
    (:mod:`dsod.runtime.conv`, which keeps the CPU's bf16 weight gradients right), the
    16-bit ReLU (:mod:`dsod.runtime.relu`) and the hand-written L2Norm backward
    (:mod:`dsod.runtime.l2norm`). With ``memory_efficient`` (``model.memory_efficient``),
    whatever ``speed_paths``: dense layers and stem recomputed in the backward pass
    (:mod:`dsod.runtime.recompute`). Without either, the paper's modules (a model switched
    before is switched back). Parameters stay the same objects and ``state_dict()`` keys
    stay the same; outputs, gradients and BN statistics are the paper modules' up to float
    rounding.
    """
    switch(model, _PAPER)
    if speed_paths:
        switch(model, TRAINING)
    if memory_efficient:
        switch(model, RECOMPUTED)
    return model


@torch.no_grad()
def store_weights_in(model: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """Store the weights and biases of ``model``'s convolutions and linear layers in
    ``dtype`` (the autocast dtype it will run under), in place; None leaves them alone.

    Autocast casts each fp32 weight to its dtype at every call, a noticeable share of a
    batch-1 forward on the CPU; stored in that dtype, the cast is a no-op and the outputs are
    the same, bit for bit. The model then needs autocast to run.
    """
    if dtype is None:
        return model
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            for name in ("weight", "bias"):
                parameter = getattr(module, name)
                if parameter is not None and parameter.is_floating_point():
                    parameter.data = parameter.data.to(dtype)
    return model


@torch.no_grad()
def for_inference(
    model: nn.Module,
    *,
    speed_paths: bool = True,
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """The network as evaluation, :class:`~dsod.inference.Detector`, the export and the
    benchmark run it: a copy of ``model`` (left as it is) in eval mode.

    With ``speed_paths``: BNs folded (:mod:`dsod.runtime.fold`), shared-buffer dense blocks
    (:mod:`dsod.runtime.shared_block`), the 16-bit ReLU, and the convolution weights stored
    in ``dtype``, the autocast dtype it will run under (:func:`store_weights_in`; None:
    fp32). Without, the paper's modules with fp32 weights. In the channels-last layout with
    ``channels_last``. Inputs and outputs as ``model``'s; outputs the same up to float
    rounding either way.
    """
    network = switch(copy.deepcopy(model), _PAPER).eval()
    if speed_paths:
        switch(fold_batch_norms(network), INFERENCE)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    return store_weights_in(network, dtype) if speed_paths else network
