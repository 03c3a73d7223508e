"""The recipe benchmark: one config trained on each shared data set at a fixed budget, and
on any other VOC folder at the config's own run length.

Each run is ``tools/train.py CONFIG data.root=SET [solver.max_iter=BUDGET] train.seed=S``
in a process of its own, one at a time, then ``tools/eval.py`` on its final checkpoint
(fp32 on a CPU, as a user evaluates). The report is one table: VOC07 and area mAP, COCO AP,
per-class AP, the learning signal, wall time, training images/s, the CPU, the seed, and
YOLO11n's figures on the same set beside them. Any other folder in VOC layout can be
benchmarked beside them (:func:`voc_folder_set`): its run length is the config's (from the
data where ``solver.max_iter`` is null), and it has no YOLO11n figures.

A *control* run trains on a copy of the set whose training annotations are shuffled across
images (each image gets another image's boxes, scaled to its size): nothing can be learnt
from it, and the learning signal (:mod:`dsod.engine.learning`) must say so. It stops after
the run's learning check, a third of the budget.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT
from dsod.engine.run_log import RunLog


@dataclass(frozen=True)
class BenchmarkSet:
    """A data set of the benchmark: where it is, its budget and YOLO11n's figures on it
    (no budget and no figures for a folder of the user's, :func:`voc_folder_set`)."""

    name: str
    what: str
    max_iter: int | None  # at batch 16; None: the config's (from the data where it is null)
    yolo: dict[str, float] | None  # YOLO11n from scratch: images, VOC07 mAP, area mAP, COCO AP
    root: Path | None = None  # None: the folder ``name`` under the shared data folder


# YOLO11n (ultralytics 8.4.190) trained from random weights with its own default recipe
# (mosaic, 320 px, batch 16, fp32) for about as many images as the budget, its last
# weights' detections on `test` scored by tools/eval.py --voc-results. Quoted from the
# shared data sets' README (measured there on 2 cores of an AMD EPYC with AVX512-BF16).
YOLO_SOURCE = "shared data README: YOLO11n (ultralytics 8.4.190) from scratch, own recipe"
SHARED_SETS: dict[str, BenchmarkSet] = {
    s.name: s
    for s in (
        BenchmarkSet(
            "bccd",
            "3 classes of blood cells, 13 small objects an image, 292 images",
            500,
            {"images": 7900, "mAP07": 0.600, "mAP": 0.601, "AP": 0.393},
        ),
        BenchmarkSet(
            "raccoon",
            "1 class, about 1 large object an image, 160 images",
            250,
            {"images": 4000, "mAP07": 0.375, "mAP": 0.376, "AP": 0.112},
        ),
        BenchmarkSet(
            "deeppcb",
            "6 classes of PCB defects, 6.7 small objects an image, 1,200 images",
            500,
            {"images": 8400, "mAP07": 0.342, "mAP": 0.326, "AP": 0.145},
        ),
    )
}


@dataclass
class RunResult:
    """One training run's figures (``None`` where a control run did not evaluate)."""

    data_set: str
    root: str  # the folder trained on (for a control, the shuffled copy)
    seed: int
    control: bool
    out_dir: str
    wall_s: float
    iterations: int | None  # the run's solver.max_iter (saved in its config.yaml)
    yolo: dict[str, float] | None  # YOLO11n's figures on the set, where known
    images_per_s: float | None
    eval: dict[str, Any] | None
    learning: dict[str, Any] | None
    eval_last_weights: dict[str, Any] | None = None  # without the moving average
    agreement_end: float | None = None  # the last logged agreement
    blind_map07: float | None = None  # the detector that never looks at the image


def voc_folder_set(path: Path) -> BenchmarkSet:
    """Any folder in VOC layout (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) as
    a set of the benchmark, named after the folder, with the config's run length and no
    YOLO11n figures. Raises ValueError naming the folder and what it lacks."""
    lacking = [
        d for d in ("Annotations", "JPEGImages", "ImageSets/Main") if not (path / d).is_dir()
    ]
    if lacking:
        raise ValueError(f"{path}: not a folder in VOC layout (no {', '.join(lacking)} in it)")
    root = path.resolve()
    return BenchmarkSet(root.name, f"the VOC folder {root}", None, None, root)


def resolve_sets(names: Sequence[str], data_dir: Path) -> list[BenchmarkSet]:
    """The sets that ``--sets`` names: a shared set's name (found under ``data_dir``) or the
    path of a VOC folder. Raises ValueError naming every entry that is neither."""
    sets, problems = [], []
    for name in names:
        if name in SHARED_SETS:
            if (data_dir / name / "Annotations").is_dir():
                sets.append(SHARED_SETS[name])
            else:
                problems.append(
                    f"{name}: not found under {data_dir} (--data; a folder of yours of that "
                    f"name is given as ./{name})"
                )
            continue
        try:
            sets.append(voc_folder_set(Path(name)))
        except ValueError as error:
            problems.append(str(error))
    names_seen = [s.name for s in sets]
    problems += [
        f"{n}: named twice (runs go in OUT/{n}_seed<S>)"
        for n in dict.fromkeys(names_seen)
        if names_seen.count(n) > 1
    ]
    if problems:
        raise ValueError("; ".join(problems) + f" (the shared sets: {', '.join(SHARED_SETS)})")
    return sets


# -- a control copy with shuffled labels ----------------------------------------------------


def _split_ids(root: Path, split: str) -> list[str]:
    return [
        line.split()[0]
        for line in (root / "ImageSets" / "Main" / f"{split}.txt").read_text().splitlines()
        if line.strip()
    ]


def _size(tree: ET.ElementTree) -> tuple[float, float]:
    size = tree.getroot().find("size")
    return float(size.findtext("width")), float(size.findtext("height"))


def shuffled_copy(
    root: Path, out: Path, splits: Sequence[str] = ("trainval",), seed: int = 0
) -> Path:
    """A copy of the VOC folder ``root`` at ``out`` whose annotations of the images in
    ``splits`` are shuffled: image ``i`` gets the objects of image ``perm(i) != i``, their
    boxes scaled from that image's size to ``i``'s. Images and split files are linked,
    other annotations copied as they are; whatever ``out`` held before is replaced.
    Returns ``out``."""
    if out.is_symlink() or out.is_file():
        out.unlink()
    elif out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("JPEGImages", "ImageSets"):
        (out / name).symlink_to((root / name).resolve(), target_is_directory=True)
    annotations = out / "Annotations"
    annotations.mkdir()
    for xml in (root / "Annotations").glob("*.xml"):
        (annotations / xml.name).write_bytes(xml.read_bytes())
    ids = list(dict.fromkeys(i for split in splits for i in _split_ids(root, split)))
    order = ids[:]
    random.Random(seed).shuffle(order)
    donors = dict(zip(order, order[1:] + order[:1]))  # a cycle: nobody keeps its own
    for image_id, donor_id in donors.items():
        target = ET.parse(root / "Annotations" / f"{image_id}.xml")
        donor = ET.parse(root / "Annotations" / f"{donor_id}.xml")
        (tw, th), (dw, dh) = _size(target), _size(donor)
        target_root = target.getroot()
        for obj in target_root.findall("object"):
            target_root.remove(obj)
        for obj in donor.getroot().findall("object"):
            box = obj.find("bndbox")
            for key, scale, limit in (
                ("xmin", tw / dw, tw),
                ("xmax", tw / dw, tw),
                ("ymin", th / dh, th),
                ("ymax", th / dh, th),
            ):
                value = min(max(1.0, float(box.findtext(key)) * scale), limit)
                box.find(key).text = str(int(round(value)))
            target_root.append(obj)
        target.write(annotations / f"{image_id}.xml")
    return out


# -- what a predictor that never looks at the image scores ----------------------------------


def blind_map(config: str, overrides: Sequence[str], root: Path) -> float:
    """VOC07 mAP on the test split of the detector that never looks at the image
    (:func:`dsod.evaluation.baseline.blind_detections`): the set's chance level."""
    from dsod.config import load_config
    from dsod.data.datasets import build_dataset
    from dsod.engine.from_data import with_class_names
    from dsod.evaluation.baseline import blind_detections
    from dsod.evaluation.voc import evaluate_voc

    data = with_class_names(load_config(config, [*overrides, f"data.root={root}"])).data
    train, test = build_dataset(data, "train"), build_dataset(data, "test")
    annotations = [test.annotation(i) for i in range(len(test))]
    detections = blind_detections([train.annotation(i) for i in range(len(train))], annotations)
    return float(evaluate_voc(annotations, detections, test.class_names).map07)


# -- running and reading one run --------------------------------------------------------------


def _log_records(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def _logged_wall_time(out_dir: Path) -> float:
    """The seconds from the first to the last line of a finished run's ``train.log``."""
    import datetime

    stamps = []
    for line in (out_dir / "train.log").read_text().splitlines():
        try:
            stamps.append(datetime.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else float("nan")


def _saved_config(out_dir: Path) -> dict[str, Any] | None:
    """The run's saved ``config.yaml`` as a mapping (what it resolved from the data
    included); None where there is none."""
    import yaml

    path = out_dir / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else None


def _run_iterations(out_dir: Path) -> int | None:
    """The run's ``solver.max_iter`` as its saved ``config.yaml`` holds it (resolved from the
    data where the config left it null); None where there is none."""
    saved = _saved_config(out_dir)
    return None if saved is None else (saved.get("solver") or {}).get("max_iter")


def run_settings(
    data_set: BenchmarkSet, root: Path, seed: int, overrides: Sequence[str]
) -> list[str]:
    """The ``key=value`` settings of one run: the data, the set's budget where it has one
    (a folder of the user's runs at the config's length), the seed, then ``overrides``."""
    budget = [] if data_set.max_iter is None else [f"solver.max_iter={data_set.max_iter}"]
    return [f"data.root={root}", *budget, f"train.seed={seed}", *overrides]


def check_reusable(out_dir: Path, settings: Sequence[str]) -> None:
    """Refuse to read a finished run in ``out_dir`` as this one unless its saved
    ``config.yaml`` holds every ``SECTION.KEY=VALUE`` of ``settings`` (parsed as the config
    parses overrides); RuntimeError naming the first that differs."""
    from dsod.config.overrides import parse_overrides

    saved = _saved_config(out_dir) or {}
    for section, values in parse_overrides(settings).items():
        for name, wanted in values.items():
            value = (saved.get(section) or {}).get(name)
            if (section, name) == ("data", "root"):
                same = value is not None and Path(str(value)).resolve() == Path(wanted).resolve()
            else:
                same = value == wanted
            if not same:
                raise RuntimeError(
                    f"{out_dir} holds a finished run with {section}.{name} {value!r}, not "
                    f"{wanted!r}: give each benchmark its own --out"
                )


def train(config: str, overrides: Sequence[str], out_dir: Path, stop_after_check: bool) -> float:
    """``tools/train.py`` in its own process; with ``stop_after_check`` it is stopped (a
    stop signal: it saves a checkpoint and exits) once the learning check is logged.
    Returns the wall time in seconds."""
    command = [
        sys.executable,
        str(REPO_ROOT / "tools" / "train.py"),
        config,
        *overrides,
        "--out",
        str(out_dir),
        "--no-progress",
    ]
    tic = time.perf_counter()
    with open(out_dir.with_suffix(".log"), "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        while process.poll() is None:
            time.sleep(5)
            if stop_after_check and RunLog(out_dir).learning_check() is not None:
                process.send_signal(signal.SIGINT)
                process.wait()
    wall = time.perf_counter() - tic
    if process.returncode not in (0, 130) and not stop_after_check:
        raise RuntimeError(
            f"training failed ({process.returncode}): see {out_dir.with_suffix('.log')}"
        )
    return wall


def evaluate(
    config: str, overrides: Sequence[str], out_dir: Path, checkpoint: str = "final.pth"
) -> dict[str, Any]:
    """``tools/eval.py`` on one of the run's checkpoints; its JSON report."""
    name = Path(checkpoint).stem
    report = out_dir / f"eval_{name}.json"
    command = [
        sys.executable,
        str(REPO_ROOT / "tools" / "eval.py"),
        config,
        *overrides,
        "--checkpoint",
        str(out_dir / "checkpoints" / checkpoint),
        "--out",
        str(out_dir / f"eval_{name}"),
        "--json",
        str(report),
        "--no-progress",
    ]
    with open(out_dir / f"eval_{name}.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, check=True)
    return json.loads(report.read_text())


def evaluate_last_weights(
    config: str, overrides: Sequence[str], out_dir: Path
) -> dict[str, Any] | None:
    """The figures of the run's last weights themselves, where it evaluated a moving
    average of them (``solver.ema``): the same run without the average. None for a run
    that kept none."""
    import torch

    state = torch.load(out_dir / "checkpoints" / "final.pth", weights_only=True)
    if "ema" not in state:
        return None
    del state["ema"]
    torch.save(state, out_dir / "checkpoints" / "final_last_weights.pth")
    return evaluate(config, overrides, out_dir, "final_last_weights.pth")


def run_one(
    config: str,
    overrides: Sequence[str],
    data_dir: Path,
    data_set: BenchmarkSet,
    seed: int,
    out_root: Path,
    control: bool = False,
) -> RunResult:
    """Train (and, unless ``control``, evaluate) ``config`` on one set of the benchmark."""
    root = data_set.root or data_dir / data_set.name
    name = f"{data_set.name}_seed{seed}" + ("_control" if control else "")
    out_dir = out_root / name
    if control:
        from dsod.config import load_config

        splits = load_config(config, list(overrides)).data.train
        copy = out_root / "data" / f"{data_set.name}_shuffled"
        root = shuffled_copy(root, copy, splits, seed=seed)
    settings = run_settings(data_set, root, seed, overrides)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    finished = (out_dir / "checkpoints" / "final.pth").is_file()
    if finished and not control:  # a run of an earlier benchmark: read, not repeated
        check_reusable(out_dir, settings)
        wall = _logged_wall_time(out_dir)
    else:
        wall = train(config, settings, out_dir, stop_after_check=control)
    records = _log_records(out_dir)
    rates = [r["images_per_s"] for r in records if r.get("images_per_s")]
    signals = [r["agreement"] for r in records if r.get("agreement") is not None]
    return RunResult(
        data_set=data_set.name,
        root=str(root),
        seed=seed,
        control=control,
        out_dir=str(out_dir),
        wall_s=wall,
        iterations=_run_iterations(out_dir),
        yolo=data_set.yolo,
        images_per_s=statistics.median(rates) if rates else None,
        eval=None if control else evaluate(config, settings, out_dir),
        eval_last_weights=None if control else evaluate_last_weights(config, settings, out_dir),
        learning=RunLog(out_dir).learning_check(),
        agreement_end=signals[-1] if signals else None,
        blind_map07=blind_map(config, settings, root),
    )


# -- the report -------------------------------------------------------------------------------


YOLO_FIGURES = ("mAP07", "mAP", "AP")
"""YOLO11n's figures in the table's last column: VOC07 mAP, area mAP, COCO AP."""


def _figure(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report_markdown(
    results: Sequence[RunResult], machine: dict[str, Any], config: str, overrides: Sequence[str]
) -> str:
    """The table of a benchmark: one row per run, YOLO11n's figures beside each set."""
    lines = [
        f"config `{config}`" + (f" with `{' '.join(overrides)}`" if overrides else ""),
        f"machine: {machine.get('cpu')}, {machine.get('usable_cores')} cores "
        f"({', '.join(machine.get('cpu_features', []))}), torch "
        f"{machine.get('versions', {}).get('torch')}, commit {machine.get('git_commit')}, "
        f"{machine.get('date')}",
        "",
        "| set | seed | iterations | VOC07 mAP | area mAP | COCO AP | per-class AP07 | "
        "last weights VOC07 / COCO AP | agreement at 1/3 (end) | wall | img/s | "
        "blind VOC07 | YOLO11n VOC07 / area / AP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        check = r.learning or {}
        signal = (
            f"{_figure(check.get('agreement'))}"
            f"{' (warned)' if check and not check.get('learning') else ''}"
            f" ({_figure(r.agreement_end)})"
        )
        if r.eval is not None:
            voc, coco = r.eval["voc"], r.eval["coco"]
            per_class = ", ".join(
                f"{name} {_figure(v['AP07'])}" for name, v in voc["per_class"].items()
            )
            last = r.eval_last_weights
            figures = [
                _figure(voc["mAP07"]),
                _figure(voc["mAP"]),
                _figure(coco["AP"]),
                per_class,
                "-"
                if last is None
                else f"{_figure(last['voc']['mAP07'])} / {_figure(last['coco']['AP'])}",
            ]
        else:
            figures = ["control: labels shuffled", "-", "-", "-", "-"]
        yolo = "-" if r.yolo is None else " / ".join(_figure(r.yolo[k]) for k in YOLO_FIGURES)
        lines.append(
            f"| {r.data_set} | {r.seed} | {r.iterations or '-'} | "
            + " | ".join(figures)
            + f" | {signal} | {r.wall_s / 60:.1f} min | "
            f"{_figure(r.images_per_s, 1)} | {_figure(r.blind_map07)} | {yolo} |"
        )
    lines += [
        "",
        "blind: the detector that never looks at the image (the training boxes, "
        "scored by how typical they are; dsod.evaluation.baseline), the set's chance "
        "level.",
        f"YOLO11n: {YOLO_SOURCE}.",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    results: Sequence[RunResult],
    machine: dict[str, Any],
    config: str,
    overrides: Sequence[str],
    json_path: Path | None,
) -> str:
    """The markdown table (returned) and, if asked, the whole report as JSON."""
    text = report_markdown(results, machine, config, overrides)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(
                {
                    "config": config,
                    "overrides": list(overrides),
                    "machine": machine,
                    "yolo11n": {
                        "source": YOLO_SOURCE,
                        **{r.data_set: r.yolo for r in results if r.yolo is not None},
                    },
                    "runs": [r.__dict__ for r in results],
                },
                indent=2,
            )
        )
    return text
