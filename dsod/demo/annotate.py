"""Detection drawn onto inputs: image files in batches, and video files or cameras frame by
frame into an ``mp4v`` video."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Iterator, Sequence

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


def _readable_images(paths: Sequence[str], batch: int,
                     unreadable: list[str]) -> Iterator[list[tuple[str, np.ndarray]]]:
    """``(path, image)`` batches of the images that can be read; the others are skipped."""
    chunk: list[tuple[str, np.ndarray]] = []
    for path in paths:
        try:
            chunk.append((path, read_image(path)))
        except ImageReadError as error:  # names the file
            skip(error, unreadable)
            continue
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def annotate_images(detector: Detector, paths: Sequence[str], outputs: Outputs,
                    window: Window, unreadable: list[str] | None = None) -> list[Path]:
    """Detect on image files in batches; write each annotated under its own name.

    An image that cannot be read is skipped with a line on stderr, and that line is added
    to ``unreadable`` (when given)."""
    unreadable = [] if unreadable is None else unreadable
    written: list[Path] = []
    start, detect_time, showing = time.perf_counter(), 0.0, True
    for chunk in _readable_images(paths, detector.batch_size, unreadable):
        tick = time.perf_counter()
        results = detector([image for _, image in chunk])
        detect_time += time.perf_counter() - tick
        for (path, image), result in zip(chunk, results):
            canvas = draw_detections(image, result)
            written.append(write_image(outputs.path(path, Path(path).name), canvas))
            if showing:
                showing = window.show("dsod demo", canvas, 0)
    if written:
        report(f"{len(written)} image(s)", len(written), time.perf_counter() - start,
               detect_time, str(outputs.out_dir))
    return written


def _frames(capture: cv2.VideoCapture, batch: int, limit: int | None) -> Iterator[list]:
    """Batches of up to ``batch`` BGR frames, ``limit`` frames in all (None: to the end)."""
    count, frames = 0, []
    while limit is None or count < limit:
        ok, frame = capture.read()
        if not ok or frame is None:
            break
        frames.append(frame)
        count += 1
        if len(frames) == batch:
            yield frames
            frames = []
    if frames:
        yield frames


def annotate_video(detector: Detector, source: Source, out_path: Path, window: Window,
                   max_frames: int | None = None) -> Path:
    """Detect on every frame of a video file or camera and write an annotated ``mp4v``
    video of the same frame count and size to ``out_path``.

    Raises:
        UnreadableInputError: the video or camera cannot be opened or gives no frame.
        DemoError: the output video cannot be written.
    """
    camera = source.kind == "camera"
    name = f"camera {source.path}" if camera else source.path
    capture = cv2.VideoCapture(int(source.path) if camera else source.path)
    if not capture.isOpened():
        raise UnreadableInputError(f"cannot open {name}" if camera else
                                   f"cannot read video {name}: OpenCV cannot open it (not a "
                                   f"video, or corrupt)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0 < fps <= 1000 else (30.0 if camera else 25.0)
    writer, count, detect_time, showing, stop = None, 0, 0.0, True, False
    start = time.perf_counter()
    try:
        for frames in _frames(capture, 1 if camera else detector.batch_size, max_frames):
            if writer is None:
                size = (frames[0].shape[1], frames[0].shape[0])
                writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                if not writer.isOpened():
                    raise DemoError(f"cannot write video {out_path} (no mp4v encoder?)")
            frames = [f if (f.shape[1], f.shape[0]) == size else cv2.resize(f, size)
                      for f in frames]
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
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise UnreadableInputError(f"{name} gave no frame" if camera else
                                   f"cannot read video {name}: no readable frame (empty or "
                                   f"corrupt file)")
    report(name, count, time.perf_counter() - start, detect_time, str(out_path))
    return out_path
