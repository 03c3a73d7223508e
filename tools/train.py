"""Train a detector from scratch.

python tools/train.py CONFIG [key=value ...] [--out DIR] [--resume]
torchrun --nproc_per_node=8 tools/train.py CONFIG [key=value ...]
"""

from __future__ import annotations

import argparse
import sys

from dsod.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. solver.max_iter=100"
    )
    parser.add_argument("--out", help="output folder (default: outputs/<config name>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in the output folder",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_intermixed_args(argv)

    def train(config):
        from dsod.engine.trainer import train as train_detector

        train_detector(config, args.out, args.resume, not args.no_progress)

    return run_tool(args.config, args.overrides, train)


if __name__ == "__main__":
    sys.exit(main())
