"""Reading and writing detections in the VOC devkit's results format, and plotting
precision/recall curves of a :class:`~dsod.evaluation.voc.VOCResult`."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsod.evaluation.voc import VOCResult
from dsod.structures import Annotation, Detections

logger = logging.getLogger(__name__)

CLASS_FILES = "class_files.json"
"""Written beside the results files when a class name is not its file name's part."""


def result_file_names(class_names: Sequence[str]) -> list[str]:
    """The part of each class's results file name: the class name itself where a file name
    can hold it (letters, digits, ``. _ - +``), else with every other character as ``_``;
    one that would repeat another gets its label (``a_b_2``). The same names always give
    the same parts."""
    parts: list[str] = []
    for label, name in enumerate(class_names, start=1):
        part = re.sub(r"[^\w.+-]", "_", name, flags=re.ASCII) or "_"
        if part in (".", ".."):
            part = part.replace(".", "_")
        if part in parts:
            part = f"{part}_{label}"
        parts.append(part)
    return parts


def write_voc_results(
    out_dir: str | Path,
    annotations_or_image_ids: Sequence[Annotation] | Sequence[str],
    detections: Mapping[str, Detections],
    class_names: Sequence[str],
    prefix: str = "comp4_det_test_",
) -> list[Path]:
    """Write detections in the devkit's results format, one file per class.

    ``<out_dir>/<prefix><class>.txt`` (the class's name as :func:`result_file_names` makes it
    safe for a file name; ``class_files.json`` maps them when one differs) holds lines
    ``image_id score xmin ymin xmax ymax`` with the box in devkit 1-based pixels ``(x1 + 1,
    y1 + 1, x2, y2)``. Numbers are written in full (the shortest decimal that reads back as
    the same double, never in exponent
    notation), so the devkit scores exactly what :func:`~dsod.evaluation.voc.evaluate_voc`
    scores: rounding would move IoUs across 0.5 and merge distinct scores into ties. Images
    are written in the given order (images without detections are skipped), each image's
    detections in their stored order. Every class gets a file, possibly empty.

    Returns:
        The ``C`` file paths, in class order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image_ids = [
        a.image_id if isinstance(a, Annotation) else str(a) for a in annotations_or_image_ids
    ]
    lines: list[list[str]] = [[] for _ in class_names]
    for image_id in image_ids:
        det = detections.get(image_id)
        if det is None or len(det) == 0:
            continue
        boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4) + [1.0, 1.0, 0.0, 0.0]
        labels = np.asarray(det.labels, dtype=np.int64)
        if labels.min() < 1 or labels.max() > len(class_names):
            raise ValueError(f"image {image_id!r}: labels must be in 1..{len(class_names)}")
        scores = np.asarray(det.scores, dtype=np.float64)
        for label, score, box in zip(labels.tolist(), scores, boxes):
            numbers = " ".join(_exact(v) for v in (score, *box))
            lines[label - 1].append(f"{image_id} {numbers}\n")
    paths = []
    parts = result_file_names(class_names)
    if parts != list(class_names):  # the mapping, for whoever reads the files
        mapping = {name: f"{prefix}{part}.txt" for name, part in zip(class_names, parts)}
        (out / CLASS_FILES).write_text(json.dumps(mapping, indent=2, ensure_ascii=False))
    for part, class_lines in zip(parts, lines):
        path = out / f"{prefix}{part}.txt"
        path.write_text("".join(class_lines))
        paths.append(path)
    return paths


def _exact(value: float) -> str:
    """``value`` in the fewest digits that read back as the same double, without an
    exponent (the devkit reads its results files with ``%f``)."""
    return np.format_float_positional(value, unique=True, trim="-")


def read_voc_results(
    results_dir: str | Path, class_names: Sequence[str], prefix: str = "comp4_det_test_"
) -> dict[str, Detections]:
    """Read devkit results files back into ``image_id -> Detections`` (internal ``xyxy``,
    float64 boxes and scores: the files' numbers exactly).

    A missing class file means no detections for that class (a warning is logged). A line
    that is not ``image_id score xmin ymin xmax ymax`` raises ``ValueError`` naming the file
    and line. Images appear in order of first appearance; an image's detections are grouped
    by class, each class in file order. :func:`read_voc_results_in_file_order` also gives
    the line order, which the devkit uses to rank equal scores.
    """
    return read_voc_results_in_file_order(results_dir, class_names, prefix)[0]


def read_voc_results_in_file_order(
    results_dir: str | Path, class_names: Sequence[str], prefix: str = "comp4_det_test_"
) -> tuple[dict[str, Detections], dict[str, np.ndarray]]:
    """:func:`read_voc_results` and, per image, each detection's line position over all
    files (int64 ``[K]``, classes in order): pass it as ``tie_break`` to
    :func:`~dsod.evaluation.voc.evaluate_voc` to rank equal scores as the devkit does, in
    file order."""
    per_image: dict[str, tuple[list, list, list, list]] = {}
    position = 0
    parts = result_file_names(class_names)
    for label, (name, part) in enumerate(zip(class_names, parts), start=1):
        path = Path(results_dir) / f"{prefix}{part}.txt"
        if not path.is_file():
            logger.warning(
                "VOC results file %s is missing: no detections for class %r", path, name
            )
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not a text results file ({error})") from None
        for lineno, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 6:
                    raise ValueError(f"{len(fields)} fields")
                values = [float(v) for v in fields[1:]]
                if not all(math.isfinite(v) for v in values):
                    raise ValueError("non-finite value")
            except ValueError as err:
                raise ValueError(
                    f"{path}:{lineno}: expected 'image_id score xmin ymin xmax ymax', "
                    f"got {line.rstrip()!r} ({err})"
                ) from None
            boxes, scores, labels, positions = per_image.setdefault(fields[0], ([], [], [], []))
            score, x1, y1, x2, y2 = values
            boxes.append((x1 - 1.0, y1 - 1.0, x2, y2))
            scores.append(score)
            labels.append(label)
            positions.append(position)
            position += 1
    detections = {
        image_id: Detections(
            boxes=np.asarray(b, dtype=np.float64).reshape(-1, 4),
            scores=np.asarray(s, dtype=np.float64),
            labels=np.asarray(lab, dtype=np.int64),
        )
        for image_id, (b, s, lab, _) in per_image.items()
    }
    order = {
        image_id: np.asarray(pos, dtype=np.int64) for image_id, (_, _, _, pos) in per_image.items()
    }
    return detections, order


def pr_curves_figure(result: VOCResult, class_names: Sequence[str] | None = None) -> Any:
    """A matplotlib ``Figure`` with a grid of precision/recall curves, one panel per class
    in class order: its recall (x) against its precision (y), titled with its name and area
    AP; a class without ground truth or detections gets an empty panel.

    ``class_names`` defaults to ``result.class_names``. Uses matplotlib's Agg canvas (no
    display, no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(class_names) if class_names is not None else result.class_names
    if len(names) != len(result.recall):
        raise ValueError(f"{len(names)} class names for {len(result.recall)} classes")
    cols = max(1, math.ceil(math.sqrt(len(names))))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(2.6 * cols, 2.4 * rows))
    FigureCanvasAgg(fig)
    for c, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, c + 1)
        if result.recall[c].size and result.num_gt[c] > 0:
            ax.plot(result.recall[c], result.precision[c], lw=1.2)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name} AP={result.ap[c]:.3f}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.supxlabel("recall")
    fig.supylabel("precision")
    fig.tight_layout()
    return fig


def plot_pr_curves(result: VOCResult, class_names: Sequence[str] | None, path: str | Path) -> Path:
    """Write :func:`pr_curves_figure` to the PNG file ``path``; returns ``path``."""
    fig = pr_curves_figure(result, class_names)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
