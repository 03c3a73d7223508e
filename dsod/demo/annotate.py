"""Detection drawn onto inputs: image files in batches, and video files or cameras frame by
frame into an ``mp4v`` video."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from dsod.data.errors import ImageReadError
from dsod.data.image_io import read_image
from dsod.demo.errors import DemoError, UnreadableInputError
from dsod.demo.outputs import Outputs, write_image
from dsod.demo.report import report, skip
from dsod.demo.sources import Source
from dsod.demo.window import Window
from dsod.inference import Detector
from dsod.visualize import draw_detections

T = TypeVar("T")


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter), drawn lazily so that
    each batch is detected before the next is read."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _readable_images(
    paths: Sequence[str], unreadable: list[str]
) -> Iterator[tuple[str, np.ndarray]]:
    """``(path, image)`` of the images that can be read; the others are skipped."""
    for path in paths:
        try:
            yield path, read_image(path)
        except ImageReadError as error:  # names the file
            skip(error, unreadable)


def annotate_images(
    detector: Detector,
    paths: Sequence[str],
    outputs: Outputs,
    window: Window,
    unreadable: list[str] | None = None,
) -> list[Path]:
    """Detect on image files in batches; write each annotated under its own name.

    An image that cannot be read is skipped with a line on stderr, and that line is added
    to ``unreadable`` (when given)."""
    unreadable = [] if unreadable is None else unreadable
    written: list[Path] = []
    start, detect_time, showing = time.perf_counter(), 0.0, True
    for chunk in _batches(_readable_images(paths, unreadable), detector.batch_size):
        tick = time.perf_counter()
        results = detector([image for _, image in chunk])
        detect_time += time.perf_counter() - tick
        for (path, image), result in zip(chunk, results):
            canvas = draw_detections(image, result)
            written.append(write_image(outputs.path(path, Path(path).name), canvas))
            if showing:
                showing = window.show("dsod demo", canvas, 0)
    if written:
        report(
            f"{len(written)} image(s)",
            len(written),
            time.perf_counter() - start,
            detect_time,
            str(outputs.out_dir),
        )
    return written


def _frames(capture: cv2.VideoCapture, limit: int | None) -> Iterator[np.ndarray]:
    """The BGR frames of ``capture``, ``limit`` of them at most (None: to the end)."""
    count = 0
    while limit is None or count < limit:
        ok, frame = capture.read()
        if not ok or frame is None:
            break
        yield frame
        count += 1


def annotate_video(
    detector: Detector,
    source: Source,
    out_path: Path,
    window: Window,
    max_frames: int | None = None,
) -> Path:
    """Detect on every frame of a video file or camera and write an annotated ``mp4v``
    video of the same frame count and size to ``out_path``. A file that gives fewer frames
    than its header announces is annotated as far as it reads, with a warning on stderr
    saying how many were read of how many.

    Raises:
        UnreadableInputError: the video or camera cannot be opened or gives no frame.
        DemoError: the output video cannot be written.
    """
    camera = source.kind == "camera"
    name = f"camera {source.path}" if camera else source.path
    capture = cv2.VideoCapture(int(source.path) if camera else source.path)
    if not capture.isOpened():
        raise UnreadableInputError(
            f"cannot open {name}"
            if camera
            else f"cannot read video {name}: OpenCV cannot open it (not a video, or corrupt)"
        )
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else (30.0 if camera else 25.0)
    announced = 0 if camera else capture.get(cv2.CAP_PROP_FRAME_COUNT)
    writer, count, detect_time, showing, stop = None, 0, 0.0, True, False
    start = time.perf_counter()
    try:
        for frames in _batches(_frames(capture, max_frames), 1 if camera else detector.batch_size):
            if writer is None:
                size = (frames[0].shape[1], frames[0].shape[0])
                writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                if not writer.isOpened():
                    raise DemoError(f"cannot write video {out_path} (no mp4v encoder?)")
            frames = [
                f if (f.shape[1], f.shape[0]) == size else cv2.resize(f, size) for f in frames
            ]
            tick = time.perf_counter()
            results = detector(frames)
            detect_time += time.perf_counter() - tick
            for frame, result in zip(frames, results):
                canvas = draw_detections(frame, result)
                writer.write(canvas)
                count += 1
                if showing and not window.show(name, canvas, 1):
                    showing = False
                    stop = camera  # q stops a camera; a file is still written to its end
            if stop:
                break
    except KeyboardInterrupt:
        print(f"stopped {name} after {count} frames")
        stop = True
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise UnreadableInputError(
            f"{name} gave no frame"
            if camera
            else f"cannot read video {name}: no readable frame (empty or corrupt file)"
        )
    report(name, count, time.perf_counter() - start, detect_time, str(out_path))
    if not stop:
        short_video_note(name, count, announced, max_frames)
    return out_path


def short_video_note(name: str, read: int, announced: float, max_frames: int | None) -> None:
    """Say on stderr when a video file gave fewer frames than its header announces (a file
    cut off or damaged midway), and ``max_frames`` does not explain it."""
    if not (math.isfinite(announced) and announced > 0):
        return  # the container does not say (some streams), or a camera
    expected = int(announced) if max_frames is None else min(int(announced), max_frames)
    if read < expected:
        print(
            f"warning: video {name}: read {read} of the {int(announced)} frames its header "
            f"announces (the file is cut off or damaged); the annotated video has "
            f"{read}",
            file=sys.stderr,
        )
