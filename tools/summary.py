"""Print a detector's sources, priors, parameters and GFLOPs.

python tools/summary.py configs/dsod300_voc.yaml [key=value ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from dsod.cli import run_tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. model.growth_rate=16"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_intermixed_args(argv)

    def summarise(config) -> None:
        from dsod.apps.summary import format_summary, model_summary

        summary = model_summary(config)
        print(json.dumps(summary) if args.json else format_summary(summary))

    return run_tool(args.config, args.overrides, summarise)


if __name__ == "__main__":
    sys.exit(main())
