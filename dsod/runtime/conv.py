"""Centre-tap convolution: the paper's convolutions, on a 1x1 map, as the 1x1 convolution
of their kernel's centre tap.

Speeds up nothing: it keeps bf16 training on the CPU correct. A convolution with an odd
kernel, "same" zero padding and no dilation sees only padding with every tap but the
centre one when its input is 1x1, so the centre tap alone gives the same output and the
same gradients (zero for the other taps). PyTorch's bf16 weight gradient of a strided 3x3
convolution over a 1x1 map on the CPU is garbage from run to run (up to 1e31, NaN; torch
2.14.1, oneDNN; stride 1 is right), and small inputs reach such maps in the last
prediction layers. Only strided convolutions take the centre tap, so every other one runs
PyTorch's own kernel, bit for bit as ``nn.Conv2d``. Must give the numbers of
``nn.Conv2d`` (``tests/test_models.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CentreTapConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves a 1x1 map (odd kernel, "same" zero padding, no
    dilation, a stride above 1) with its kernel's centre tap alone; any other input, and
    any stride-1 convolution, as ``nn.Conv2d``.
    Same parameters and state as the ``nn.Conv2d`` it replaces. Input ``[B, C_in, H, W]``,
    output ``[B, C_out, H', W']``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        if (
            torch.jit.is_tracing()
            or x.shape[-2:] != (1, 1)
            or self.stride == (1, 1)
            or kh % 2 == 0
            or kw % 2 == 0
            or self.padding != (kh // 2, kw // 2)
            or self.dilation != (1, 1)
            or self.padding_mode != "zeros"
        ):
            return super().forward(x)
        centre = self.weight[:, :, kh // 2 : kh // 2 + 1, kw // 2 : kw // 2 + 1]
        return F.conv2d(x, centre, self.bias, self.stride, 0, 1, self.groups)
