"""tools/demo.py: annotated videos and images from a tiny model, and clear input errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, load_tool

from dsod.config import config_from_dict, config_to_dict
from dsod.demo import DemoError, collect_sources, gui_support
from dsod.engine.builders import build_model
from dsod.engine.checkpoint import save_atomic
from dsod.runtime.compiled import compile_for_inference

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "model": dict(TINY_MODEL),
    "priors": {"steps": None},
    "data": {"class_names": ["a", "b"]},
    "test": {"batch_size": 2},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = config_from_dict(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    save_atomic({"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg)}, path)
    return str(path)


def write_video(path: Path, frames: int = 5, size: tuple[int, int] = (96, 64)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()


def read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_video_gives_annotated_video_with_same_frames(tmp_path, checkpoint, capsys):
    write_video(tmp_path / "clip.avi")
    out = tmp_path / "out"
    code = load_tool("demo").main(
        [
            str(tmp_path / "clip.avi"),
            "--checkpoint",
            checkpoint,
            "--out",
            str(out),
            "--score-threshold",
            "0.2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    frames = read_frames(out / "clip.mp4")
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)
    assert "fps" in capsys.readouterr().out
    originals = read_frames(tmp_path / "clip.avi")
    # Boxes were drawn: the annotated frames differ from the input by more than codec noise.
    assert np.abs(frames[0].astype(int) - originals[0].astype(int)).max() > 100


def test_folder_of_images_gives_annotated_images(tmp_path, checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name, (h, w) in {"one.jpg": (60, 90), "two.png": (100, 50), "three.jpg": (70, 70)}.items():
        cv2.imwrite(str(images / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code = load_tool("demo").main(
        [
            str(images),
            "--checkpoint",
            checkpoint,
            "--out",
            str(out),
            "--score-threshold",
            "0.0",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["one.jpg", "three.jpg", "two.png"]
    original = cv2.imread(str(images / "two.png"))
    annotated = cv2.imread(str(out / "two.png"))
    assert annotated.shape == original.shape and not np.array_equal(annotated, original)


def test_compiled_demo_draws_what_the_eager_demo_draws(tmp_path, checkpoint, monkeypatch):
    import dsod.runtime.network

    compiled_models = []

    def spy(model):
        compiled_models.append(model)
        return compile_for_inference(model)

    monkeypatch.setattr(dsod.runtime.network, "compile_for_inference", spy)
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), np.random.default_rng(2).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    drawn = {}
    for flags in ([], ["--compile"]):
        out = tmp_path / ("compiled" if flags else "eager")
        assert (
            load_tool("demo").main(
                [
                    str(image),
                    "--checkpoint",
                    checkpoint,
                    "--out",
                    str(out),
                    "--score-threshold",
                    "0.0",
                    "--device",
                    "cpu",
                    *flags,
                ]
            )
            == 0
        )
        drawn[bool(flags)] = cv2.imread(str(out / "one.png")).astype(int)
    assert len(compiled_models) == 1  # by the --compile run only
    assert not np.array_equal(drawn[False], cv2.imread(str(image)))
    # The same boxes (up to float rounding, which may move a line by a pixel).
    assert np.mean(drawn[True] != drawn[False]) < 0.01


@pytest.mark.parametrize("case", ["zero bytes", "garbage", "no frames"])
def test_empty_or_corrupt_video_is_skipped_with_one_line(tmp_path, checkpoint, capsys, case):
    path = tmp_path / ("broken.avi" if case == "no frames" else "broken.mp4")
    if case == "zero bytes":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif case == "no frames":  # a valid container without a single frame
        write_video(path, frames=0)
    code = load_tool("demo").main(
        [str(path), "--checkpoint", checkpoint, "--out", str(tmp_path / "out"), "--device", "cpu"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-2].startswith(f"skipped: cannot read video {path}: ")
    assert lines[-1].startswith("error: 1 of 1 inputs could not be read")
    assert not (tmp_path / "out" / "broken.mp4").exists()


def test_missing_input_is_a_usage_error(tmp_path, checkpoint, capsys):
    path = tmp_path / "missing.mp4"
    code = load_tool("demo").main(
        [str(path), "--checkpoint", checkpoint, "--out", str(tmp_path / "out"), "--device", "cpu"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: cannot read {path}: the file does not exist"


def test_unreadable_image_and_empty_folder(tmp_path, checkpoint, capsys):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code = load_tool("demo").main(
        [
            str(tmp_path / "bad.jpg"),
            "--checkpoint",
            checkpoint,
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    assert code == 1 and str(tmp_path / "bad.jpg") in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(DemoError, match="empty"):
        collect_sources([str(tmp_path / "empty")])
    with pytest.raises(DemoError, match="matches"):
        collect_sources([str(tmp_path / "*.png")])


def test_unreadable_inputs_are_skipped_and_the_rest_annotated(tmp_path, checkpoint, capsys):
    # A folder of images read in batches of 2 (test.batch_size), one of them corrupt, and a
    # corrupt video between two good inputs: each bad one is skipped with its own line.
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.png", "c.png", "d.png"):
        cv2.imwrite(str(images / name), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    (images / "b.png").write_bytes(b"<html>404 Not Found</html>")
    write_video(tmp_path / "good.avi", frames=3)
    (tmp_path / "bad.mp4").write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "out"
    code = load_tool("demo").main(
        [
            str(images),
            str(tmp_path / "bad.mp4"),
            str(tmp_path / "good.avi"),
            "--checkpoint",
            checkpoint,
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png", "d.png", "good.mp4"]
    assert len(read_frames(out / "good.mp4")) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ")[0] for line in err] == ["skipped", "skipped", "error"]
    assert err[0].startswith(f"skipped: cannot read image {images / 'b.png'}: ")
    assert "<_io" not in err[0]
    assert err[1].startswith(f"skipped: cannot read video {tmp_path / 'bad.mp4'}: ")
    assert err[2].startswith("error: 2 of 6 inputs could not be read")


def test_run_demo_lists_what_it_wrote_and_skipped(tmp_path, checkpoint, capsys):
    from dsod.demo import run_demo
    from dsod.inference import Detector

    cv2.imwrite(str(tmp_path / "good.png"), np.zeros((30, 40, 3), np.uint8))
    (tmp_path / "empty.jpg").write_bytes(b"")
    detector = Detector.from_checkpoint(checkpoint, None, [], "cpu", 0.3)
    result = run_demo(
        detector, [str(tmp_path / "empty.jpg"), str(tmp_path / "good.png")], tmp_path / "out"
    )
    assert result.written == [tmp_path / "out" / "good.png"] and result.inputs == 2
    assert result.unreadable == [
        f"cannot read image {tmp_path / 'empty.jpg'}: the file is empty (0 bytes)"
    ]
    with pytest.raises(DemoError, match="max_frames must be at least 1"):
        run_demo(detector, [str(tmp_path / "good.png")], tmp_path / "out", max_frames=0)


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_max_frames_below_one_is_a_usage_error(tmp_path, checkpoint, capsys, value):
    write_video(tmp_path / "clip.avi", frames=2)
    with pytest.raises(SystemExit) as info:
        load_tool("demo").main(
            [
                str(tmp_path / "clip.avi"),
                "--checkpoint",
                checkpoint,
                "--out",
                str(tmp_path / "out"),
                "--max-frames",
                value,
            ]
        )
    assert info.value.code == 2
    assert "--max-frames" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sources_are_classified(tmp_path):
    write_video(tmp_path / "v.avi", frames=1)
    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((8, 8, 3), np.uint8))
    sources = collect_sources([str(tmp_path / "*.*"), "0"])
    assert [(s.kind, Path(s.path).name) for s in sources] == [
        ("image", "i.png"),
        ("video", "v.avi"),
        ("camera", "0"),
    ]


def test_gui_support_reads_the_build_and_the_display(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:        NONE\n  x: y\n")
    ok, why = gui_support()
    assert not ok and "headless" in why
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:        GTK3\n")
    monkeypatch.setenv("DISPLAY", ":0")
    assert gui_support()[0]
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert gui_support()[0] == (not __import__("sys").platform.startswith("linux"))


def test_a_cut_off_video_says_how_many_frames_it_gave(tmp_path, checkpoint, capsys):
    write_video(tmp_path / "whole.avi", frames=10)
    data = (tmp_path / "whole.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    demo = load_tool("demo").main
    args = ["--checkpoint", checkpoint, "--device", "cpu"]
    assert demo([str(tmp_path / "cut.avi"), "--out", str(tmp_path / "a"), *args]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: video " in err
        and "cut.avi: read 5 of the 10 frames its header "
        "announces (the file is cut off or damaged); the annotated video has 5"
        in err
    )
    assert len(read_frames(tmp_path / "a" / "cut.mp4")) == 5
    # Neither a whole file nor a cut asked for with --max-frames is warned about.
    assert demo([str(tmp_path / "whole.avi"), "--out", str(tmp_path / "b"), *args]) == 0
    assert (
        demo([str(tmp_path / "cut.avi"), "--out", str(tmp_path / "c"), "--max-frames", "3", *args])
        == 0
    )
    assert "warning" not in capsys.readouterr().err


def test_an_out_with_an_image_suffix_is_the_file_for_one_input(tmp_path, checkpoint, capsys):
    demo = load_tool("demo").main
    args = ["--checkpoint", checkpoint, "--device", "cpu"]
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.full((40, 50, 3), 90, np.uint8))
    out = tmp_path / "new" / "x.jpg"
    assert demo([str(tmp_path / "a.png"), "--out", str(out), *args]) == 0
    assert out.is_file() and cv2.imread(str(out)).shape == (40, 50, 3)
    assert capsys.readouterr().out.splitlines()[0] == f"writing to {out.absolute()}"
    many = tmp_path / "y.jpg"
    assert demo([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out", str(many), *args]) == 2
    assert (
        f"--out {many} names a file, but there are 2 inputs: give a folder"
        in capsys.readouterr().err
    )
    write_video(tmp_path / "clip.avi")
    assert demo([str(tmp_path / "clip.avi"), "--out", str(many), *args]) == 2
    assert (
        f"--out {many}: the annotated video is written as mp4, but the name ends in .jpg"
        in capsys.readouterr().err
    )
    assert not many.exists()
    assert demo([str(tmp_path / "clip.avi"), "--out", str(tmp_path / "v.mp4"), *args]) == 0
    assert len(read_frames(tmp_path / "v.mp4")) == 5
