"""Export a detector to ONNX: the raw network, images in, per-prior outputs out.

The graph has one input and two outputs, as :class:`dsod.models.detector.DSOD`:

* ``images``: float32 ``[N, 3, S, S]``, BGR with ``augment.mean_bgr`` subtracted (see
  :class:`dsod.data.transforms.TestTransform`); ``N`` is dynamic unless asked otherwise;
* ``logits``: ``[N, P, C + 1]`` raw class scores (class 0 is background; softmax them);
* ``offsets``: ``[N, P, 4]`` box offsets against the priors (``dsod.box_coder.BoxCoder`` with
  ``priors.variances``; the priors are ``build_priors(config)()``).

Decoding and NMS stay outside the graph (:class:`dsod.postprocess.PostProcessor`). When the
``onnx`` package is installed the model's metadata carries the config as JSON
(``dsod_config``), the class names, the input size and the mean, so the file is self-describing.

Two exporters: the TorchScript-based one (``dynamo=False``, the default here: it needs only
torch) and torch's newer ``torch.export``-based one (``dynamo=True``, needs ``onnxscript``).
Both give the same outputs to within float rounding.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dsod.config import Config, config_to_dict
from dsod.runtime.speed_paths import for_inference

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "offsets")


def export_onnx(
    model: nn.Module,
    input_size: int,
    path: str | Path,
    opset: int = 17,
    dynamic_batch: bool = True,
    dynamo: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` as an ONNX file: an eval-mode copy on the CPU with its modules
    switched back to the paper's (:func:`~dsod.runtime.speed_paths.for_inference` without
    speed paths: plain ReLUs and concatenating dense blocks, which trace to standard ONNX
    operators). BNs already folded into ``model`` stay folded (``tools/export.py`` exports
    the network :class:`~dsod.inference.Detector` runs).

    Args:
        model: ``images [N, 3, S, S] -> (logits [N, P, C+1], offsets [N, P, 4])``.
        input_size: ``S``.
        path: the ``.onnx`` file to write (weights inside, no external data file).
        opset: ONNX opset version.
        dynamic_batch: ``N`` free (named ``batch``); otherwise fixed at 1.
        dynamo: use torch's ``torch.export``-based exporter (needs ``onnxscript``).
        metadata: string key/values stored in the model's ``metadata_props`` (needs
            ``onnx``; skipped with a warning without it).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = for_inference(model, speed_paths=False).to("cpu")
    example = torch.zeros(2 if dynamic_batch else 1, 3, input_size, input_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        names = {"input_names": [INPUT_NAME], "output_names": list(OUTPUT_NAMES)}
        if dynamo:
            batch = {0: torch.export.Dim("batch", min=1, max=4096)}
            shapes = {INPUT_NAME: batch} if dynamic_batch else None
            options = {"dynamic_shapes": shapes, "external_data": False}
        else:
            axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
            options = {
                "dynamic_axes": axes if dynamic_batch else None,
                "do_constant_folding": True,
            }
        torch.onnx.export(
            model, (example,), str(path), dynamo=dynamo, opset_version=opset, **names, **options
        )
    if metadata:
        _add_metadata(path, metadata)
    return path


def _add_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    try:
        import onnx
    except ImportError:
        logger.warning("the onnx package is not installed: %s carries no dsod metadata", path)
        return
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.save(proto, str(path))


def config_metadata(config: Config, class_names: Sequence[str] | None = None) -> dict[str, str]:
    """The metadata :func:`export_onnx` stores for a config: ``dsod_config`` (the config as
    JSON), ``class_names`` (JSON list), ``input_size`` and ``mean_bgr``."""
    names = class_names if class_names is not None else config.data.class_names
    return {
        "dsod_config": json.dumps(config_to_dict(config)),
        "class_names": json.dumps(list(names) if names is not None else None),
        "input_size": str(config.model.input_size),
        "mean_bgr": json.dumps(list(config.augment.mean_bgr)),
    }


def compare_with_onnxruntime(
    path: str | Path, model: nn.Module, input_size: int, batch_size: int = 2, seed: int = 0
) -> float:
    """Run the ONNX file with ONNX Runtime (CPU) and the model with PyTorch on the same
    random mean-subtracted images ``[batch_size, 3, S, S]``.

    Returns:
        The largest absolute difference over both outputs.

    Raises:
        ImportError: onnxruntime is not installed.
    """
    import onnxruntime as ort

    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, input_size, input_size, generator=generator) * 60.0
    with torch.no_grad():
        expected = [t.numpy() for t in model.to("cpu").eval()(images)]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
    diffs = []
    for name, want, have in zip(OUTPUT_NAMES, expected, got):
        if want.shape != have.shape:
            raise ValueError(f"ONNX output {name} has shape {have.shape}, PyTorch {want.shape}")
        diffs.append(float(np.abs(want - have).max()))
    return max(diffs)
