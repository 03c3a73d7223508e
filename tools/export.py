"""Export a trained checkpoint to ONNX (raw outputs: logits and box offsets per prior).

    python tools/export.py CHECKPOINT [key=value ...] [--config CONFIG] [--out model.onnx]
                           [--opset 17] [--static-batch] [--dynamo] [--no-verify] [--force]

The config is the one saved in the checkpoint unless --config is given. With onnxruntime
installed the exported file is run once and compared with PyTorch (max abs difference).
An existing output file is not overwritten unless --force is given.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="trained checkpoint (.pth)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--config", help="experiment YAML (default: the checkpoint's config)")
    parser.add_argument("--out", help="ONNX file to write (default: CHECKPOINT with .onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--static-batch",
        action="store_true",
        help="fix the batch size at 1 instead of a dynamic batch axis",
    )
    parser.add_argument(
        "--dynamo",
        action="store_true",
        help="use torch's torch.export-based exporter (needs onnxscript)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not compare ONNX Runtime's outputs with PyTorch's",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite the output file if it exists"
    )
    args = parser.parse_intermixed_args(argv)

    from dsod.cli import run_guarded, setup_logging

    setup_logging()
    return run_guarded(lambda: export(args))


def export(args: argparse.Namespace) -> int:
    """Export, and check the file with ONNX Runtime when it is installed; the exit code."""
    from pathlib import Path

    from dsod.export import compare_with_onnxruntime, config_metadata, export_onnx
    from dsod.inference import Detector

    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    if out.exists() and not args.force:
        print(
            f"error: {out} exists; pass --force to overwrite it, or give another --out",
            file=sys.stderr,
        )
        return 2
    detector = Detector.from_checkpoint(args.checkpoint, args.config, args.overrides)
    config, model = detector.config, detector.model
    export_onnx(
        model,
        config.model.input_size,
        out,
        args.opset,
        not args.static_batch,
        args.dynamo,
        config_metadata(config, detector.class_names),
    )
    size = config.model.input_size
    print(
        f"wrote {out}: input images [{'1' if args.static_batch else 'N'}, 3, {size}, "
        f"{size}] -> logits, offsets"
    )
    if args.no_verify:
        return 0
    try:
        diff = compare_with_onnxruntime(out, model, size, batch_size=1 if args.static_batch else 2)
    except ImportError:
        print("note: onnxruntime is not installed; the export was not checked")
        return 0
    print(f"ONNX Runtime vs PyTorch: max abs difference {diff:.3g}")
    if diff > 1e-3:
        print("error: the exported model's outputs differ from PyTorch's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
