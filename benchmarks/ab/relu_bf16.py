"""Side by side: DSOD300's in-place ReLUs through the int16 bits of bf16 tensors
(``dsod.runtime.relu.SignBitReLU``) against ``nn.ReLU(inplace=True)``, switched in the
network as ``dsod.runtime.speed_paths`` switches them, in one process, the two alternated:
a bf16 training step at batch 8 and bf16 inference at batch 1 and 8 (CPU).
Run from the repository root: ``python benchmarks/ab/relu_bf16.py``."""

from swap_harness import bf16_training_and_inference
from torch import nn

from dsod.runtime.relu import SignBitReLU
from dsod.runtime.speed_paths import switch

bf16_training_and_inference(
    {
        "F.relu": lambda net: switch(net, {SignBitReLU: nn.ReLU}),
        "int16 bits": lambda net: switch(net, {nn.ReLU: SignBitReLU}),
    }
)
