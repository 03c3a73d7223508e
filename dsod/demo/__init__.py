"""The work behind ``tools/demo.py``: run a :class:`~dsod.inference.Detector` on images,
folders, glob patterns, video files or a webcam, and write annotated copies.

Images are written into the output folder under their own names; a video (or webcam) becomes
``<stem>.mp4`` there (``mp4v`` codec). A window is shown only where OpenCV has GUI support
and a display exists (``opencv-python-headless`` has none: the demo says so and goes on).
An input that cannot be read (a corrupt image or video) is skipped with a line on stderr; the
others are still annotated, and :class:`DemoResult` lists what was skipped.

Modules: :mod:`~dsod.demo.sources` (inputs), :mod:`~dsod.demo.window` (the preview window),
:mod:`~dsod.demo.outputs` (output paths and image files), :mod:`~dsod.demo.annotate` (images
and videos), :mod:`~dsod.demo.report` (what is printed), :mod:`~dsod.demo.run` (the whole run).
"""

from dsod.demo.annotate import annotate_images, annotate_video
from dsod.demo.errors import DemoError, UnreadableInputError
from dsod.demo.run import DemoResult, run_demo
from dsod.demo.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, Source, collect_sources
from dsod.demo.window import gui_support

__all__ = [
    "DemoError",
    "DemoResult",
    "IMAGE_SUFFIXES",
    "Source",
    "UnreadableInputError",
    "VIDEO_SUFFIXES",
    "annotate_images",
    "annotate_video",
    "collect_sources",
    "gui_support",
    "run_demo",
]
