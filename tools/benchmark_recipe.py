"""Train one config on the shared data sets, or on any VOC folder, and write one table.

    python tools/benchmark_recipe.py CONFIG [key=value ...] [--data DIR] [--sets bccd,raccoon,PATH]
                                     [--seeds 0,1,2] [--control] [--out DIR]
                                     [--markdown FILE] [--json FILE]

The shared sets (bccd, raccoon, deeppcb, in VOC layout under --data) are trained one after
the other, each with ``data.root``, ``solver.max_iter`` (its budget) and ``train.seed`` set,
then evaluated with tools/eval.py. --sets may also name any folder in VOC layout by its
path: it is trained at the config's run length (from the data in configs/own_voc.yaml) and
has no YOLO11n figures. The table has VOC07 and area mAP, COCO AP, per-class
AP, the learning signal, wall time, images/s and YOLO11n's figures on the same set.
--control trains on copies whose training labels are shuffled across images, each up to
its learning check (a third of the budget): the learning signal must flag every one.
A run whose folder under --out already holds a final checkpoint is read, not repeated, so
an interrupted benchmark goes on where it stopped; one whose saved config differs from the
run asked for is refused (give each benchmark, and each variant, its own --out).
Run it on a quiet machine, one benchmark at a time: runs side by side slow each other.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ sits beside tools/ and is not installed
    sys.path.insert(0, str(REPO))

from benchmarks.common import machine_info  # noqa: E402
from benchmarks.recipe import SHARED_SETS, resolve_sets, run_one, write_report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="experiment YAML file (e.g. configs/own_voc.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    parser.add_argument(
        "--data",
        default=str(REPO.parent / "shared" / "data"),
        help="folder holding the shared sets (default: ../shared/data)",
    )
    parser.add_argument(
        "--sets",
        default=",".join(SHARED_SETS),
        help=f"comma-separated: {', '.join(SHARED_SETS)}, or the path of a VOC folder",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated train.seed values")
    parser.add_argument(
        "--control",
        action="store_true",
        help="shuffled training labels, stopped at the learning check",
    )
    parser.add_argument("--out", default="outputs/recipe", help="runs go in OUT/<set>_seed<S>")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--json", help="also write the whole report to this JSON file")
    args = parser.parse_intermixed_args(argv)

    # train.py and eval.py run from the repository: every path the runs see is absolute
    data = Path(args.data).resolve()
    config = str(Path(args.config).resolve())
    out = Path(args.out).resolve()
    try:
        sets = resolve_sets([n.strip() for n in args.sets.split(",") if n.strip()], data)
    except ValueError as error:
        parser.error(str(error))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = []
    for data_set in sets:
        for seed in seeds:
            try:
                result = run_one(
                    config, args.overrides, data, data_set, seed, out, control=args.control
                )
            except RuntimeError as error:  # a failed run, or a finished one of other settings
                print(f"benchmark_recipe.py: {error}", file=sys.stderr)
                return 1
            results.append(result)
            voc = (result.eval or {}).get("voc", {})
            print(
                f"{data_set.name} seed {seed}: VOC07 mAP {voc.get('mAP07')}, learning check "
                f"{result.learning}, {result.wall_s / 60:.1f} min",
                flush=True,
            )
    text = write_report(
        results,
        machine_info(),
        args.config,
        args.overrides,
        Path(args.json) if args.json else None,
    )
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
