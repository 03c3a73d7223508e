"""What the demo runs on: command-line inputs expanded into image files, video files and
cameras."""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dsod.demo.errors import DemoError

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
    ".pgm",
    ".jp2",
}
VIDEO_SUFFIXES = {
    ".mp4",
    ".avi",
    ".mov",
    ".mkv",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".3gp",
    ".ts",
}
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Source:
    """One thing to run on: an image file, a video file, or a camera (``path`` = index)."""

    kind: Literal["image", "video", "camera"]
    path: str


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


def _classify(path: Path) -> Source:
    kind = "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
    return Source(kind, str(path))


def _media(paths: list[Path]) -> list[Source]:
    """The image and video files among ``paths``, in their order."""
    return [
        _classify(p)
        for p in paths
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
    ]


def _expand(spec: str) -> list[Source]:
    """The sources of one command-line input (see :func:`collect_sources`)."""
    path = Path(spec)
    if spec.isdigit() and not path.exists():
        return [Source("camera", spec)]
    if path.is_file():
        return [_classify(path)]
    if path.is_dir():
        found = _media(sorted(path.iterdir()))
        if not found:
            raise DemoError(f"folder {path} holds no image or video files")
        return found
    if _GLOB_CHARS.search(spec):
        found = _media(sorted(Path(p) for p in glob.glob(spec, recursive=True)))
        if not found:
            raise DemoError(f"no image or video file matches {spec}")
        return found
    raise DemoError(f"cannot read {spec}: the file does not exist")
