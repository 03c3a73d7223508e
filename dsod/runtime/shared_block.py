"""Shared-buffer dense block: the paper's dense block at inference, without the ever
wider concatenations.

Without autograd the block writes every layer's features into one preallocated output and
each layer reads a channel slice of it, as in Pleiss et al.'s shared storage: ``L`` copies
of ``growth_rate`` channels instead of ``L`` concatenations of all earlier maps. With
autograd it concatenates (a buffer written in place would break the saved tensors of
earlier layers). Under ``torch.compile`` it concatenates too: Inductor fuses each
concatenation into the BN-ReLU that reads it, so no concatenation is stored, whereas it
would rewrite the whole shared output at every layer, which measured slower. Must give the
numbers of
:class:`dsod.models.densenet.DenseBlock` (``tests/test_fuse.py``).
"""

from __future__ import annotations

import torch

from dsod.models.densenet import DenseBlock


class SharedBufferDenseBlock(DenseBlock):
    """:class:`~dsod.models.densenet.DenseBlock` that, without autograd and uncompiled,
    fills one shared output. ``[B, C, H, W] -> [B, C + num_layers * growth_rate, H, W]``,
    in the input's layout (channels-last or contiguous)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return super().forward(x)
        batch, channels, height, width = x.shape
        layout = (
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            else torch.contiguous_format
        )
        out = torch.empty(
            (batch, self.out_channels, height, width),
            dtype=x.dtype,
            device=x.device,
            memory_format=layout,
        )
        out[:, :channels] = x
        for layer in self.layers:
            out[:, channels : channels + self.growth_rate] = layer([out[:, :channels]])
            channels += self.growth_rate
        return out
