"""Evaluate a detector on the config's test split: VOC07 mAP (11-point and area) and COCO AP.

    python tools/eval.py CONFIG --checkpoint CKPT [key=value ...] [--out DIR] [--json FILE]
                         [--workers N] [--batch-size N] [--device cuda]
                         [--amp none|bf16|fp16] [--compile]
    python tools/eval.py CONFIG --voc-results DIR [key=value ...]    # score existing files
    python tools/eval.py CONFIG --coco-results FILE [key=value ...]

A model run writes OUT/voc_results/comp4_det_test_<class>.txt (VOC devkit format) and
OUT/coco_results.json; every run prints the per-class table and the summary and writes
OUT/pr_curves.png. OUT defaults to outputs/<config name>/eval.
"""

from __future__ import annotations

import argparse
import sys

from dsod.cli import device_name, run_tool
from dsod.config import AMP_SETTINGS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run this checkpoint's model on the test split")
    source.add_argument(
        "--voc-results",
        metavar="DIR",
        help="score VOC devkit results files DIR/comp4_det_test_<class>.txt",
    )
    source.add_argument(
        "--coco-results", metavar="FILE", help="score an existing COCO results JSON"
    )
    parser.add_argument("--out", help="output folder (default: outputs/<config name>/eval)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument(
        "--workers", type=int, help="image-loading processes (default: data.workers)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="images per batch (default: test.batch_size)"
    )
    parser.add_argument(
        "--device", type=device_name, help="cpu, cuda, cuda:1, ... (default: cuda if available)"
    )
    parser.add_argument(
        "--amp",
        choices=AMP_SETTINGS,
        default=None,
        help="run the network in this precision (default: train.amp on a GPU, "
        "none = fp32 on the CPU; auto or bf16 run bf16 on a CPU with "
        "native bf16, faster, with figures that differ by rounding)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the network (torch.compile, frozen weights) at the "
        "first batch of each size, then run faster, above all in bf16 "
        "(docs/PERFORMANCE.md)",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="score the test split even when more than "
        "train.max_bad_sample_fraction of its images have unusable "
        "annotation files (the output and --json say how many)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_intermixed_args(argv)

    def work(config):
        from dsod.apps.eval_tool import run_eval

        run_eval(
            config,
            checkpoint=args.checkpoint,
            voc_results=args.voc_results,
            coco_results=args.coco_results,
            out_dir=args.out,
            json_path=args.json,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=not args.no_progress,
            amp=args.amp,
            compile=args.compile,
            partial=args.partial,
        )

    return run_tool(args.config, args.overrides, work)


if __name__ == "__main__":
    sys.exit(main())
