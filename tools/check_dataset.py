#!/usr/bin/env python
"""Check every annotation and image of a config's train and test splits; report each problem.

Prints one line per problem, then a summary by kind.

    python tools/check_dataset.py configs/dsod300_voc.yaml [data.root=/data/VOCdevkit ...]

Then it prints how well the priors cover the training boxes (overall, per class and per
size band; with ``priors.fit: true``, the priors training would fit), and warns with the
fix when coverage is low.

Exit status: 0 when the data set is usable (warnings at most), 1 when something would stop
training or evaluation (a missing split, a split without boxes, or more than
train.max_bad_sample_fraction of a split's images with a malformed annotation file or a
missing or unreadable image; fewer are warnings, as training skips them), 2 for a bad
config or command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dsod.cli import run_tool
from dsod.coverage import coverage_lines
from dsod.data.check import check_dataset, report_lines
from dsod.data.datasets import build_dataset
from dsod.data.errors import DataError
from dsod.engine.from_data import (
    coverage_warning,
    fit_config_priors,
    fitted_lines,
    measure_coverage,
    with_class_names,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", help="SECTION.KEY=VALUE config overrides")
    parser.add_argument("--workers", type=int, default=8, help="image-reading threads")
    args = parser.parse_args(argv)

    def check(config) -> int:
        try:
            config = with_class_names(config)
        except DataError:
            pass  # the split's own problem: the report below names it
        report = check_dataset(config, workers=args.workers)
        print("\n".join(report_lines(report)))
        if all(s.usable for s in report.splits if s.split == "train"):
            print()
            print("\n".join(coverage_report(config, args.config)))
        return report.exit_code

    return run_tool(args.config, args.overrides, check)


def coverage_report(config, config_path: str) -> list[str]:
    """The priors' coverage of the training boxes (the fitted priors with ``priors.fit``)."""
    try:
        dataset = build_dataset(config.data, "train")
        lines = []
        if config.priors.fit:
            config, fitted = fit_config_priors(config, dataset)
            lines += fitted_lines(fitted, config)
        coverage = measure_coverage(config, dataset)
    except (DataError, ValueError) as error:
        return [f"prior coverage not measured: {error}"]
    lines += coverage_lines(coverage)
    warning = coverage_warning(coverage, config_path)
    return lines + ([f"warning: {warning}"] if warning else [])


if __name__ == "__main__":
    sys.exit(main())
