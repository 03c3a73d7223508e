"""The demo's preview window: ``cv2.imshow`` where OpenCV has GUI support and a display
exists, and a note (no window) where it has not."""

from __future__ import annotations

import os
import re
import sys

import cv2
import numpy as np


def gui_support() -> tuple[bool, str]:
    """Whether ``cv2.imshow`` can open a window here, and why not."""
    match = re.search(r"^\s*GUI:\s*(.*)$", cv2.getBuildInformation(), re.MULTILINE)
    backend = match.group(1).strip() if match else ""
    if backend.upper() == "NONE":
        return False, (
            "this OpenCV build has no GUI support (opencv-python-headless); "
            "install opencv-python to get a window"
        )
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False, "there is no display (DISPLAY is not set)"
    return True, f"OpenCV GUI {backend or 'available'}"


class Window:
    """``cv2.imshow`` if possible; ``show`` returns False when the user pressed q or Esc."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            ok, why = gui_support()
            if not ok:
                print(f"note: not showing a window: {why}")
                self.enabled = False

    def show(self, name: str, image: np.ndarray, wait_ms: int) -> bool:
        """Show BGR ``uint8 [H, W, 3]`` ``image`` in window ``name`` for ``wait_ms`` (0: until
        a key); False when that key was q or Esc. A window that fails turns itself off."""
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
