"""Side by side: DSOD300's in-place ReLUs through the int16 bits of bf16 tensors
(``dsod.models.layers.relu_``) against ``F.relu(inplace=True)``, in one process, the two
alternated: a bf16 training step at batch 8 and bf16 inference at batch 1 and 8 (CPU).
Run from the repository root: ``python benchmarks/ab/relu_bf16.py``."""
from torch.nn import functional as F

from dsod.models import densenet, fuse, layers
from swap_harness import bf16_training_and_inference

fast = layers.relu_


def plain(x):
    return F.relu(x, inplace=True)


def use(relu):
    densenet.relu_ = layers.relu_ = fuse.relu_ = relu


bf16_training_and_inference({"F.relu": lambda: use(plain), "int16 bits": lambda: use(fast)})
