"""Where the demo writes: output paths in one folder, and annotated images written there."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dsod.demo.errors import DemoError


class Outputs:
    """Output paths in one folder, never the input itself, never the same one twice."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.used: set[Path] = set()

    def path(self, source: str, name: str) -> Path:
        """A new path for file ``name`` in the folder, written from input ``source``; a name
        already given gets ``_1``, ``_2``, ... before its suffix.

        Raises:
            DemoError: the path is ``source`` itself.
        """
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
