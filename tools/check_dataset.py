#!/usr/bin/env python
"""Check the data set a config names: every annotation and every image of its train and
test splits. Prints one line per problem, then a summary by kind.

    python tools/check_dataset.py configs/dsod300_voc.yaml [data.root=/data/VOCdevkit ...]

Exit status: 0 when the data set is usable (warnings at most), 1 when something would stop
training (a missing split, a malformed annotation file, a missing or unreadable image), 2
for a bad config or command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from dsod.config import ConfigError, load_config
from dsod.data.check import check_dataset, report_lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("overrides", nargs="*", help="SECTION.KEY=VALUE config overrides")
    parser.add_argument("--workers", type=int, default=8, help="image-reading threads")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        report = check_dataset(config.data, workers=args.workers)
    except (ConfigError, NotImplementedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(report_lines(report)))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
