"""Where the demo writes: output paths in one folder (or the one file ``--out`` names for a
single input), and annotated images written there."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dsod.demo.errors import DemoError
from dsod.demo.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Source


def output_file(out: Path, sources: Sequence[Source]) -> Path | None:
    """The file ``--out`` names, when it is not a folder and ends in an image or video
    suffix (``--out x.jpg``); None when it names a folder.

    Raises:
        DemoError: it names a file but there is more than one input, or an input of the
            other kind (a video for ``x.jpg``), or a video's output not ending in ``.mp4``.
    """
    suffix = out.suffix.lower()
    if out.is_dir() or suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
        return None
    if len(sources) != 1:
        raise DemoError(
            f"--out {out} names a file, but there are {len(sources)} inputs: give "
            f"a folder to write them into"
        )
    source = sources[0]
    if source.kind == "image" and suffix not in IMAGE_SUFFIXES:
        raise DemoError(
            f"--out {out} names a video file, but the input {source.path} is an "
            f"image: give an image file name or a folder"
        )
    if source.kind != "image" and suffix != ".mp4":
        raise DemoError(
            f"--out {out}: the annotated video is written as mp4, but the name "
            f"ends in {out.suffix}: give a .mp4 file name or a folder"
        )
    return out


class Outputs:
    """Output paths in one folder, never the input itself, never the same one twice; or the
    one file ``--out`` names (``file``), for a single input."""

    def __init__(self, out_dir: Path, file: Path | None = None) -> None:
        self.out_dir = out_dir
        self.file = file
        self.used: set[Path] = set()

    def path(self, source: str, name: str) -> Path:
        """A new path for file ``name`` in the folder (or :attr:`file`, when given), written
        from input ``source``; a name already given gets ``_1``, ``_2``, ... before its
        suffix.

        Raises:
            DemoError: the path is ``source`` itself.
        """
        candidate = self.file or self.out_dir / name
        stem, suffix = candidate.stem, candidate.suffix
        number = 1
        while candidate in self.used:
            candidate = self.out_dir / f"{stem}_{number}{suffix}"
            number += 1
        if Path(source).exists() and candidate.resolve() == Path(source).resolve():
            raise DemoError(
                f"writing {candidate} would overwrite the input; choose another output folder"
            )
        self.used.add(candidate)
        return candidate


def write_image(path: Path, image: np.ndarray) -> Path:
    """Write BGR ``uint8 [H, W, 3]`` ``image`` to ``path``, or as PNG next to it where OpenCV
    cannot write that format; returns the path written.

    Raises:
        DemoError: not even the PNG can be written.
    """
    try:
        written = cv2.imwrite(str(path), image)
    except cv2.error:
        written = False
    if not written:  # a format OpenCV cannot write (or no such encoder): PNG instead
        path = path.with_suffix(".png")
        if not cv2.imwrite(str(path), image):
            raise DemoError(f"cannot write {path}")
    return path
