"""Learning curves from the trainer's ``log.jsonl``: training loss and test mAP per step."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LearningCurve:
    """One run's curves, each a list of ``(step, value)`` in log order.

    ``loss`` holds only finite logged losses (a skipped step is logged as null);
    ``map07`` the VOC07 11-point mAP of every evaluation, the final one included.
    """

    loss: list[tuple[int, float]] = field(default_factory=list)
    map07: list[tuple[int, float]] = field(default_factory=list)


def read_learning_curve(path: str | Path) -> LearningCurve:
    """Read a ``log.jsonl`` written by :class:`dsod.engine.trainer.Trainer`.

    Raises:
        ValueError: a line is not a JSON object with a ``step`` (names the file and line).
    """
    path = Path(path)
    curve = LearningCurve()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a training log record ({error})") from None
        if isinstance(record.get("loss"), (int, float)):
            curve.loss.append((step, float(record["loss"])))
        if isinstance(record.get("mAP07"), (int, float)):
            curve.map07.append((step, float(record["mAP07"])))
    return curve


def plot_learning_curves(curves: Mapping[str, LearningCurve], path: str | Path) -> Path:
    """Write one PNG with two panels, training loss (log scale) and test VOC07 mAP against
    the iteration, one line per named run. Uses matplotlib's Agg canvas (no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(fig)
    loss_ax, map_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, curve in curves.items():
        if curve.loss:
            loss_ax.plot(*zip(*curve.loss), lw=1.0, label=name)
        if curve.map07:
            map_ax.plot(*zip(*curve.map07), marker="o", ms=3, lw=1.2, label=name)
    loss_ax.set_yscale("log")
    loss_ax.set_title("training loss (MultiBox)")
    map_ax.set_ylim(0, 1)
    map_ax.set_title("test VOC07 11-point mAP")
    for ax in (loss_ax, map_ax):
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
