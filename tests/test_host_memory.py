"""The C allocator setting of the tools: large CPU tensors reuse freed memory."""

import json
import os
import platform
import subprocess
import sys

import pytest

# Allocates a 72 MiB tensor (an activation map's size) and prints how many bytes glibc
# holds in separately mapped blocks (mallinfo2's hblkhd) with it alive, and the mode.
PROBE = """
import ctypes, json, torch
from dsod.runtime.host_memory import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
mode = reuse_freed_memory()
before = libc.mallinfo2().hblkhd
tensor = torch.empty(18 * 1024 * 1024)
print(json.dumps({"mode": mode, "mapped": libc.mallinfo2().hblkhd - before}))
"""


def probe(**env: str) -> dict:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "DSOD_SYSTEM_MALLOC")
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def glibc_version() -> tuple[int, ...]:
    name, version = platform.libc_ver()
    if not sys.platform.startswith("linux") or name != "glibc":
        return ()
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


@pytest.mark.skipif(glibc_version() < (2, 33), reason="needs glibc's mallopt and mallinfo2")
def test_large_tensors_come_from_the_heap_instead_of_fresh_mappings():
    heap, default = probe(), probe(DSOD_SYSTEM_MALLOC="1")
    assert heap["mode"] == "heap"
    assert default["mode"] == "default (DSOD_SYSTEM_MALLOC is set)"
    tensor_bytes = 18 * 1024 * 1024 * 4
    assert default["mapped"] >= tensor_bytes  # its own mmap, unmapped again when freed
    assert heap["mapped"] == 0  # from the heap, where freed memory stays for reuse


def test_glibc_settings_of_the_user_are_left_alone():
    assert probe(MALLOC_ARENA_MAX="2", MALLOC_MMAP_MAX_="65536")["mode"] in (
        "default (MALLOC_MMAP_MAX_ is set)",
        "default (not glibc)",
        f"default (not Linux ({sys.platform}))",
    )
