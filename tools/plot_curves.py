"""Plot learning curves (training loss, test mAP) of one or more training runs into a PNG.

    python tools/plot_curves.py outputs/dsod300_small_bccd_cpu outputs/ssd300_vgg16_bccd_cpu \
        --out docs/bccd_curves.png

Each run is an output folder of tools/train.py (its log.jsonl) or a log.jsonl itself; the
legend uses the folder's name, or NAME=PATH to choose it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsod.apps.learning_curves import plot_learning_curves, read_learning_curve
from dsod.cli import run_guarded
from dsod.data.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="output folders or log.jsonl files ([NAME=]PATH)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args(argv)

    def plot() -> None:
        curves = {}
        for run in args.runs:
            name, _, path = run.rpartition("=")
            log = Path(path)
            if log.is_dir():
                log = log / "log.jsonl"
            if not log.is_file():
                raise DataError(f"{log}: no such training log")
            try:
                curves[name or log.parent.name] = read_learning_curve(log)
            except ValueError as error:
                raise DataError(str(error)) from None
        print(f"wrote {plot_learning_curves(curves, args.out)}")

    return run_guarded(plot)


if __name__ == "__main__":
    sys.exit(main())
