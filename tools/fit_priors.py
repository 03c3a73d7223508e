#!/usr/bin/env python
"""Fit a config's priors to its training boxes; print them and how well they cover the boxes.

    python tools/fit_priors.py CONFIG [key=value ...] [--write FITTED.yaml]

Prints the configured and the fitted priors' coverage (overall, per class, per size band)
and the fitted values as YAML lines for the config's ``priors`` section. ``--write`` saves
the whole config with the fitted priors (``priors.fit: false``), ready to train with, as a
new file: writing onto the config it reads is refused (the comments and layout of a
hand-written config would be lost). ``priors.fit: true`` in a config does the same fit at
the start of training.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dsod.cli import run_tool


def _same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (links and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist
        return Path(a).resolve() == Path(b).resolve()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", help="SECTION.KEY=VALUE config overrides")
    parser.add_argument("--write", metavar="YAML", help="save the config with the fitted priors")
    args = parser.parse_intermixed_args(argv)
    if args.write and _same_file(args.write, args.config):
        print(
            f"error: --write {args.write} is the config this reads; its comments and layout "
            f"would be lost: write the fitted config to another file",
            file=sys.stderr,
        )
        return 2

    def fit(config) -> int:
        from dsod.config import save_config
        from dsod.coverage import coverage_lines
        from dsod.data.datasets import build_dataset
        from dsod.engine.from_data import (
            fit_config_priors,
            fitted_lines,
            measure_coverage,
            with_class_names,
        )

        config = with_class_names(config)
        dataset = build_dataset(config.data, "train")
        configured = dataclasses.replace(
            config, priors=dataclasses.replace(config.priors, fit=False)
        )
        fitted, result = fit_config_priors(config, dataset)
        print("configured priors:")
        print("\n".join(coverage_lines(measure_coverage(configured, dataset))))
        print()
        print("\n".join(fitted_lines(result, fitted)))
        print("\n".join(coverage_lines(measure_coverage(fitted, dataset))))
        if args.write:
            save_config(fitted, args.write)
            print(f"config with the fitted priors: {args.write}")
        return 0

    return run_tool(args.config, args.overrides, fit)


if __name__ == "__main__":
    sys.exit(main())
