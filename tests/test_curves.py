import json

import cv2
import pytest
from conftest import load_tool

from dsod.apps.learning_curves import read_learning_curve


def write_log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_read_learning_curve_keeps_finite_losses_and_every_evaluation(tmp_path):
    log = write_log(
        tmp_path / "log.jsonl",
        [
            {"step": 10, "loss": 5.0, "lr": 0.1},
            {"step": 20, "loss": None, "lr": 0.1},  # a skipped step
            {"step": 20, "mAP07": 0.25, "mAP": 0.2, "AP": 0.1},
            {"step": 30, "loss": 3.5, "lr": 0.01},
            {"step": 30, "mAP07": 0.5, "mAP": 0.4, "AP": 0.2},
        ],
    )
    curve = read_learning_curve(log)
    assert curve.loss == [(10, 5.0), (30, 3.5)]
    assert curve.map07 == [(20, 0.25), (30, 0.5)]


def test_a_broken_line_names_the_file_and_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss"\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2"):
        read_learning_curve(log)


def test_plot_tool_draws_both_runs(tmp_path, capsys):
    for name, scale in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        write_log(
            tmp_path / name / "log.jsonl",
            [{"step": s, "loss": scale * 10 / s} for s in range(1, 50)]
            + [{"step": s, "mAP07": s / 100 / scale} for s in (10, 20, 49)],
        )
    out = tmp_path / "curves.png"
    tool = load_tool("plot_curves")
    assert (
        tool.main(
            [str(tmp_path / "a"), f"second={tmp_path / 'b' / 'log.jsonl'}", "--out", str(out)]
        )
        == 0
    )
    image = cv2.imread(str(out))
    assert image.shape == (380, 1000, 3)
    assert (image.min(axis=2) < 200).mean() > 0.01  # lines, axes, text on the white canvas
    assert tool.main([str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing: no such training log" in capsys.readouterr().err
