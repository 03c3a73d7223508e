"""Run a trained detector on images, folders, globs, videos or a webcam; write annotated copies.

    python tools/demo.py INPUT [INPUT ...] --checkpoint CKPT [--out DIR] [--score-threshold 0.3]
                         [--config CONFIG] [--set key=value]... [--device cpu] [--show]
                         [--max-frames N] [--amp auto|none|bf16|fp16] [--no-cuda-graphs]
                         [--compile]

INPUT is an image, a folder, a quoted glob ("images/*.jpg"), a video file, or a webcam index
(0). Images are written into DIR (default outputs/demo) under their own names, videos as
DIR/<stem>.mp4; for a single input, --out may name the file instead (x.jpg for an image,
x.mp4 for a video), and such a name with several inputs is refused. An input that cannot
be read is skipped with a message naming it and the rest are annotated; the exit status is
then 1. A video file cut off midway is annotated as far as it reads, with a warning saying
how many of the frames its header announces it gave. The config is the one saved in the
checkpoint unless --config is given.
On a GPU the network is replayed from a recorded CUDA graph (--no-cuda-graphs: eagerly).
--compile runs it through torch.compile with frozen weights: faster once compiled, worth it
for videos and folders; on a GPU the compiled network is the one recorded. What each choice
gains is in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import sys

from dsod.cli import device_name
from dsod.config import AMP_SETTINGS


def _at_least_one(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image, folder, glob, video file or webcam index",
    )
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint (.pth)")
    parser.add_argument("--config", help="experiment YAML (default: the checkpoint's config)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override, e.g. --set test.nms_iou=0.5 (repeatable)",
    )
    parser.add_argument(
        "--out",
        default="outputs/demo",
        help="output folder, or for a single input the file to write (x.jpg, x.mp4)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        help="draw detections scoring at least this (default 0.3)",
    )
    parser.add_argument(
        "--device",
        default=None,
        type=device_name,
        help="cpu, cuda, ... (default: cuda if available)",
    )
    parser.add_argument(
        "--amp",
        choices=AMP_SETTINGS,
        default="auto",
        help="precision: auto (default) runs bf16 on a CPU with AMX or "
        "AVX-512 BF16, fp32 on other CPUs, fp16 on a GPU; or none (fp32), "
        "bf16, fp16",
    )
    parser.add_argument(
        "--no-cuda-graphs",
        dest="cuda_graphs",
        action="store_false",
        help="on a GPU, run the network eagerly instead of replaying a "
        "recorded CUDA graph per batch shape",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the network (torch.compile, frozen weights) at the first "
        "image, then run faster (on a GPU, the recorded CUDA graph replays "
        "the compiled network; docs/PERFORMANCE.md)",
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="also show a window (needs a display and OpenCV with GUI support)",
    )
    parser.add_argument(
        "--max-frames",
        type=_at_least_one,
        default=None,
        help="stop each video or webcam after this many frames (>= 1)",
    )
    args = parser.parse_args(argv)

    from dsod.cli import run_guarded, setup_logging

    setup_logging()

    def demo() -> int:
        import torch

        from dsod.demo import run_demo
        from dsod.inference import Detector

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        detector = Detector.from_checkpoint(
            args.checkpoint,
            args.config,
            args.set,
            device,
            args.score_threshold,
            cuda_graphs=args.cuda_graphs,
            amp=args.amp,
            compile=args.compile,
        )
        result = run_demo(detector, args.inputs, args.out, args.show, args.max_frames)
        if result.unreadable:
            print(
                f"error: {len(result.unreadable)} of {result.inputs} inputs could not be "
                f"read (see the 'skipped' lines above)",
                file=sys.stderr,
            )
            return 1
        return 0

    return run_guarded(demo)


if __name__ == "__main__":
    sys.exit(main())
