"""The work behind ``tools/demo.py``: run a :class:`~dsod.inference.Detector` on images,
folders, glob patterns, video files or a webcam, and write annotated copies.

Images are written into the output folder under their own names; a video (or webcam) becomes
``<stem>.mp4`` there (``mp4v`` codec). A window is shown only where OpenCV has GUI support
and a display exists (``opencv-python-headless`` has none: the demo says so and goes on).
An input that cannot be read (a corrupt image or video) is skipped with a line on stderr; the
others are still annotated, and :class:`DemoResult` lists what was skipped.
"""

from __future__ import annotations

import glob
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Sequence

import cv2
import numpy as np

from dsod.data.errors import DataError, ImageReadError
from dsod.data.image_io import read_image
from dsod.inference import Detector
from dsod.visualize import draw_detections

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm",
                  ".pgm", ".jp2"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".3gp", ".ts"}
_GLOB_CHARS = re.compile(r"[*?\[]")


class DemoError(DataError):
    """An input the demo cannot read or an output it cannot write; names the file."""


class UnreadableInputError(DemoError):
    """A video file or camera that gives no frame; the demo skips it and goes on."""


@dataclass
class DemoResult:
    """What :func:`run_demo` did.

    Attributes:
        written: the annotated files, in input order (images first, then videos).
        unreadable: one line per input that could not be read and was skipped, naming the
            file and the reason.
        inputs: how many inputs (images, videos, cameras) there were, folders expanded.
    """

    written: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    inputs: int = 0


@dataclass(frozen=True)
class Source:
    """One thing to run on: an image file, a video file, or a camera (``path`` = index)."""

    kind: Literal["image", "video", "camera"]
    path: str


def _classify(path: Path) -> Source:
    kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
    return Source(kind, str(path))


def collect_sources(specs: Sequence[str], missing: list[str] | None = None) -> list[Source]:
    """Expand command-line inputs: files, folders (their images and videos, sorted), glob
    patterns, and camera indices (``0``). Files are videos by suffix, images otherwise.

    Args:
        specs: the inputs as given.
        missing: if given, an input that does not exist (or a folder or pattern without
            media) is added to it as a message instead of raising.

    Raises:
        DemoError: a file or folder does not exist, or a folder or pattern has no media
            (without ``missing``).
    """
    sources: list[Source] = []
    for spec in specs:
        try:
            sources.extend(_expand(spec))
        except DemoError as error:
            if missing is None:
                raise
            missing.append(str(error))
    return sources


def _expand(spec: str) -> list[Source]:
    """The sources of one command-line input (see :func:`collect_sources`)."""
    path = Path(spec)
    if spec.isdigit() and not path.exists():
        return [Source("camera", spec)]
    if path.is_file():
        return [_classify(path)]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file()
                       and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        if not found:
            raise DemoError(f"folder {path} holds no image or video files")
        return [_classify(p) for p in found]
    if _GLOB_CHARS.search(spec):
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True))
        found = [p for p in found if p.is_file()
                 and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
        if not found:
            raise DemoError(f"no image or video file matches {spec}")
        return [_classify(p) for p in found]
    raise DemoError(f"cannot read {spec}: the file does not exist")


def gui_support() -> tuple[bool, str]:
    """Whether ``cv2.imshow`` can open a window here, and why not."""
    match = re.search(r"^\s*GUI:\s*(.*)$", cv2.getBuildInformation(), re.MULTILINE)
    backend = match.group(1).strip() if match else ""
    if backend.upper() == "NONE":
        return False, ("this OpenCV build has no GUI support (opencv-python-headless); "
                       "install opencv-python to get a window")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                 or os.environ.get("WAYLAND_DISPLAY")):
        return False, "there is no display (DISPLAY is not set)"
    return True, f"OpenCV GUI {backend or 'available'}"


class _Window:
    """``cv2.imshow`` if possible; ``show`` returns False when the user pressed q or Esc."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            ok, why = gui_support()
            if not ok:
                print(f"note: not showing a window: {why}")
                self.enabled = False

    def show(self, name: str, image: np.ndarray, wait_ms: int) -> bool:
        if not self.enabled:
            return True
        try:
            cv2.imshow(name, image)
            key = cv2.waitKey(wait_ms) & 0xFF
        except cv2.error as error:
            print(f"note: not showing a window: {error}")
            self.enabled = False
            return True
        return key not in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            cv2.destroyAllWindows()


class _Outputs:
    """Output paths in one folder, never the input itself, never the same one twice."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.used: set[Path] = set()

    def path(self, source: str, name: str) -> Path:
        candidate = self.out_dir / name
        stem, suffix = candidate.stem, candidate.suffix
        number = 1
        while candidate in self.used:
            candidate = self.out_dir / f"{stem}_{number}{suffix}"
            number += 1
        if Path(source).exists() and candidate.resolve() == Path(source).resolve():
            raise DemoError(f"writing {candidate} would overwrite the input; choose another "
                            f"output folder")
        self.used.add(candidate)
        return candidate


def _write_image(path: Path, image: np.ndarray) -> Path:
    try:
        written = cv2.imwrite(str(path), image)
    except cv2.error:
        written = False
    if not written:  # a format OpenCV cannot write (or no such encoder): PNG instead
        path = path.with_suffix(".png")
        if not cv2.imwrite(str(path), image):
            raise DemoError(f"cannot write {path}")
    return path


def _skip(error: DataError, unreadable: list[str]) -> None:
    """Note an input that cannot be read: one line on stderr, and in ``unreadable``."""
    print(f"skipped: {error}", file=sys.stderr)
    unreadable.append(str(error))


def _readable_images(paths: Sequence[str], batch: int,
                     unreadable: list[str]) -> Iterator[list[tuple[str, np.ndarray]]]:
    """``(path, image)`` batches of the images that can be read; the others are skipped."""
    chunk: list[tuple[str, np.ndarray]] = []
    for path in paths:
        try:
            chunk.append((path, read_image(path)))
        except ImageReadError as error:  # names the file
            _skip(error, unreadable)
            continue
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def annotate_images(detector: Detector, paths: Sequence[str], outputs: _Outputs,
                    window: _Window, unreadable: list[str] | None = None) -> list[Path]:
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
            written.append(_write_image(outputs.path(path, Path(path).name), canvas))
            if showing:
                showing = window.show("dsod demo", canvas, 0)
    if written:
        _report(f"{len(written)} image(s)", len(written), time.perf_counter() - start,
                detect_time, str(outputs.out_dir))
    return written


def _frames(capture: cv2.VideoCapture, batch: int, limit: int | None) -> Iterator[list]:
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


def annotate_video(detector: Detector, source: Source, out_path: Path, window: _Window,
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
    _report(name, count, time.perf_counter() - start, detect_time, str(out_path))
    return out_path


def _report(what: str, frames: int, seconds: float, detect_seconds: float, out: str) -> None:
    fps = frames / seconds if seconds > 0 else float("inf")
    det_fps = frames / detect_seconds if detect_seconds > 0 else float("inf")
    print(f"{what}: {frames} frame(s) in {seconds:.2f} s, {fps:.1f} fps "
          f"(detector alone {det_fps:.1f} fps) -> {out}")


def run_demo(detector: Detector, inputs: Sequence[str], out_dir: str | Path,
             show: bool = False, max_frames: int | None = None) -> DemoResult:
    """Annotate every input (see :func:`collect_sources`) into ``out_dir``.

    An input that cannot be read (a missing path, a corrupt image or video, a camera
    without frames) is skipped with a line on stderr naming it; the others are still
    annotated.

    Args:
        max_frames: stop each video or camera after this many frames (at least 1).

    Returns:
        The written files (images under their own names, videos as ``<stem>.mp4``) and the
        inputs that were skipped.

    Raises:
        DemoError: no input exists (or the only folders and patterns have no media),
            ``max_frames`` is below 1, or an output cannot be written (the message names it).
    """
    if max_frames is not None and max_frames < 1:
        raise DemoError(f"max_frames must be at least 1 (got {max_frames})")
    missing: list[str] = []
    sources = collect_sources(inputs, missing)
    if not sources:
        raise DemoError(missing[0] if len(missing) == 1 else
                        f"none of the {len(missing)} inputs exists: {'; '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"writing to {out.absolute()}")
    outputs, window = _Outputs(out), _Window(show)
    result = DemoResult(inputs=len(sources) + len(missing))
    for message in missing:
        print(f"skipped: {message}", file=sys.stderr)
        result.unreadable.append(message)
    try:
        images = [s.path for s in sources if s.kind == "image"]
        if images:
            result.written += annotate_images(detector, images, outputs, window,
                                              result.unreadable)
        for source in sources:
            if source.kind != "image":
                stem = f"camera{source.path}" if source.kind == "camera" else Path(source.path).stem
                path = outputs.path(source.path, f"{stem}.mp4")
                try:
                    result.written.append(annotate_video(detector, source, path, window,
                                                         max_frames))
                except UnreadableInputError as error:
                    _skip(error, result.unreadable)
    finally:
        window.close()
    return result
