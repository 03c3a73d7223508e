"""How the C allocator hands large CPU tensors to this process.

glibc's ``malloc`` serves every block above its mmap threshold (a few MB at most) with a
fresh ``mmap`` and unmaps it on ``free``. Every large CPU tensor then costs a page fault per
4 KiB page the first time it is written, and detectors allocate such tensors at every
layer. :func:`reuse_freed_memory` makes ``malloc`` serve them from its heap and keep freed
memory there, so that the pages are written again instead of faulted in. The cost: the
process's resident memory no longer shrinks after a peak, and it can stay higher than the
tensors need. docs/PERFORMANCE.md ("the allocator") has what each side measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

# mallopt() parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1

OPT_OUT_VARIABLE = "DSOD_SYSTEM_MALLOC"
"""Set to 1 to leave the C allocator as it is."""

_GLIBC_VARIABLES = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "GLIBC_TUNABLES",
)

_mode = "default"


def reuse_freed_memory() -> str:
    """Have glibc serve large blocks from its heap and never return freed memory to the
    system (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, INT_MAX)``), for the
    rest of this process and the processes it forks (data-loader workers).

    Does nothing, and says why, when not on Linux with glibc, when ``DSOD_SYSTEM_MALLOC=1``
    or when the user set glibc's own ``MALLOC_*`` or ``GLIBC_TUNABLES`` variables.

    Returns:
        ``"heap"`` when applied, else ``"default (<reason>)"``; :func:`allocator_mode`
        returns the same afterwards.
    """
    global _mode
    if _mode == "heap":
        return _mode
    reason = _reason_to_skip()
    if reason is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1:
            _mode = "heap"
            return _mode
        reason = "mallopt refused"
    _mode = f"default ({reason})"
    return _mode


def allocator_mode() -> str:
    """``"heap"`` after :func:`reuse_freed_memory` applied, else ``"default ..."``."""
    return _mode


def _reason_to_skip() -> str | None:
    if os.environ.get(OPT_OUT_VARIABLE, "") not in ("", "0"):
        return f"{OPT_OUT_VARIABLE} is set"
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    if platform.libc_ver()[0] != "glibc":
        return "not glibc"
    user_set = [name for name in _GLIBC_VARIABLES if name in os.environ]
    if user_set:
        return f"{user_set[0]} is set"
    return None
