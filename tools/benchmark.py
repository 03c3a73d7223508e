"""Measure DSOD300 and the SSD300 VGG16 baseline on this machine: speed, memory, pipeline.

    python tools/benchmark.py [--device cpu|cuda] [--quick] [--only SECTION[,SECTION]]
                              [--json OUT] [--data-root DIR] [--threads N]
                              [--precisions fp32,bf16] [--train-batches 32,64]
                              [--batch 8] [--compile] [--no-channels-last]

Sections: inference, training, ceiling, memory, memory_per_image, postprocess, data,
voc_eval (docs/PERFORMANCE.md explains each). Each prints a table when it finishes; the
whole report (machine, versions, settings, results) goes to --json. --quick is a smoke run
(one warm-up, two repetitions, batches of 2): it checks the tool, it measures nothing.
Run it on a quiet machine: other load changes every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ sits beside tools/ and is not installed
    sys.path.insert(0, str(REPO))

from benchmarks.common import BenchOptions  # noqa: E402
from benchmarks.suite import SECTIONS, run_benchmarks  # noqa: E402
from dsod.cli import run_guarded  # noqa: E402
from dsod.config import Config, ConfigError, load_config  # noqa: E402


def _model_name(config: Config, taken: dict[str, Config]) -> str:
    """The report's name of a model: ``dsod300`` (DSOD at its input size) or ``ssd300_vgg16``;
    a second model of the same name gets ``_2``."""
    arch = config.model.arch
    name = f"dsod{config.model.input_size}" if arch == "dsod" else arch
    return name if name not in taken else f"{name}_2"


def _batches(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise ValueError(f"--train-batches takes comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--quick", action="store_true", help="tiny repetition counts and batches (a smoke run)"
    )
    parser.add_argument(
        "--only", default=None, help=f"comma-separated sections, from: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--json", metavar="OUT", help="write the report as JSON to OUT")
    parser.add_argument("--dsod-config", default=str(REPO / "configs/dsod300_voc.yaml"))
    parser.add_argument(
        "--ssd-config",
        default=str(REPO / "configs/ssd300_vgg16_voc.yaml"),
        help="the baseline; 'none' leaves it out",
    )
    parser.add_argument(
        "--data-root",
        default="../shared/data/bccd",
        help="BCCD (VOC layout) for the data section, relative to the current "
        "directory; synthetic JPEGs are used when it is missing",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    parser.add_argument(
        "--precisions",
        default=None,
        help="comma-separated from fp32,bf16,fp16 (default: fp32, and bf16 on "
        "a CPU with native bf16; fp32 and fp16 on CUDA)",
    )
    parser.add_argument(
        "--train-batches",
        default=None,
        help="comma-separated training batches to sweep, up to the first that "
        "fails (default: 32,64,128,256,512 on CUDA, none on CPU; "
        "'none' for none)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="the inference-throughput, training and memory batch (default 8)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the models through torch.compile (inference with frozen "
        "weights, as Detector(compile=True); training as train.compile=true)",
    )
    parser.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="keep the default (NCHW) memory format",
    )
    parser.add_argument(
        "--no-torchvision-full",
        dest="torchvision_full",
        action="store_false",
        help="skip timing torchvision's complete SSD300 model",
    )
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None

    def benchmark() -> int:
        try:
            configs = [load_config(args.dsod_config)]
            if args.ssd_config.lower() != "none":
                configs.append(load_config(args.ssd_config))
            models = {}
            for config in configs:
                models[_model_name(config, models)] = config
            options = BenchOptions(
                device=args.device,
                quick=args.quick,
                channels_last=args.channels_last,
                threads=args.threads,
                data_root=args.data_root,
                precisions=tuple(args.precisions.split(",")) if args.precisions else None,
                train_batches=_batches(args.train_batches),
                batch=args.batch,
                compile=args.compile,
            )
            report = run_benchmarks(
                models,
                options,
                only,
                torchvision_full=args.torchvision_full and "ssd300_vgg16" in models,
            )
        except ValueError as error:  # an unknown section or precision, a bad batch list
            raise ConfigError(str(error)) from None
        if args.json:
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {path}")
        return 1 if report["errors"] else 0

    # run_guarded lets the C allocator reuse freed memory, as for the other tools; the
    # memory sections measure in fresh processes.
    return run_guarded(benchmark)


if __name__ == "__main__":
    sys.exit(main())
