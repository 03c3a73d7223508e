"""The whole demo run: every input annotated into one folder, unreadable ones skipped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dsod.demo.annotate import annotate_images, annotate_video
from dsod.demo.errors import DemoError, UnreadableInputError
from dsod.demo.outputs import Outputs, output_file
from dsod.demo.report import skip
from dsod.demo.sources import collect_sources
from dsod.demo.window import Window
from dsod.inference import Detector


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


def run_demo(
    detector: Detector,
    inputs: Sequence[str],
    out_dir: str | Path,
    show: bool = False,
    max_frames: int | None = None,
) -> DemoResult:
    """Annotate every input (see :func:`~dsod.demo.sources.collect_sources`) into ``out_dir``.

    An input that cannot be read (a missing path, a corrupt image or video, a camera
    without frames) is skipped with a line on stderr naming it; the others are still
    annotated.

    Args:
        out_dir: the folder to write into; or, for a single input, a file name with an
            image suffix (an image) or ``.mp4`` (a video or camera), written as that file.
        max_frames: stop each video or camera after this many frames (at least 1).

    Returns:
        The written files (images under their own names, videos as ``<stem>.mp4``) and the
        inputs that were skipped.

    Raises:
        DemoError: no input exists (or the only folders and patterns have no media),
            ``max_frames`` is below 1, ``out_dir`` names a file that the inputs cannot be
            written as (several inputs, another kind), or an output cannot be written (the
            message names it).
    """
    if max_frames is not None and max_frames < 1:
        raise DemoError(f"max_frames must be at least 1 (got {max_frames})")
    missing: list[str] = []
    sources = collect_sources(inputs, missing)
    if not sources:
        raise DemoError(
            missing[0]
            if len(missing) == 1
            else f"none of the {len(missing)} inputs exists: {'; '.join(missing)}"
        )
    out = Path(out_dir)
    file = output_file(out, sources)
    folder = out.parent if file is not None else out
    folder.mkdir(parents=True, exist_ok=True)
    print(f"writing to {out.absolute()}")
    outputs, window = Outputs(folder, file), Window(show)
    result = DemoResult(inputs=len(sources) + len(missing))
    for message in missing:
        skip(message, result.unreadable)
    try:
        images = [s.path for s in sources if s.kind == "image"]
        if images:
            result.written += annotate_images(detector, images, outputs, window, result.unreadable)
        for source in sources:
            if source.kind != "image":
                stem = (
                    f"camera{source.path}" if source.kind == "camera" else Path(source.path).stem
                )
                path = outputs.path(source.path, f"{stem}.mp4")
                try:
                    result.written.append(
                        annotate_video(detector, source, path, window, max_frames)
                    )
                except UnreadableInputError as error:
                    skip(error, result.unreadable)
    finally:
        window.close()
    return result
