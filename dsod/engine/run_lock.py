"""One training run per output folder at a time.

:func:`claim_output_folder` takes an exclusive ``flock`` on ``<out>/.run.lock`` before a
run does any work, and holds it for the run's life: a second run on the same folder is
refused at once (:class:`OutputFolderBusyError`, naming the folder and the pid of the run
that holds it), instead of both writing checkpoints and logs into it. The kernel releases
the lock when the holder exits, however it ends (a killed run leaves no stale lock); the
file itself stays, holding the last holder's pid.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".run.lock"

# Descriptors of the locks this process holds. A forked child (a DataLoader worker) closes
# its copies at once, so that only this process keeps the folder: a worker that outlives a
# killed run for a moment does not hold it (closing a copy does not release the lock).
_held: set[int] = set()


def _close_inherited() -> None:
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited)


class OutputFolderBusyError(RuntimeError):
    """Another run holds the output folder; the message names it and the holder's pid."""


def _holder(fd: int) -> str:
    """``" (pid 1234)"`` from the lock file's contents, or ``""`` when it holds none."""
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


@contextlib.contextmanager
def claim_output_folder(out_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``out_dir`` for this run (made if needed) until the block ends.

    Args:
        out_dir: the run's output folder.
        enabled: False claims nothing (the other processes of a distributed run: the main
            process holds the folder for all of them).

    Raises:
        OutputFolderBusyError: another process holds the folder.
        OSError: the folder or its lock file cannot be made.
    """
    if not enabled:
        yield
        return
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise OutputFolderBusyError(
                f"another training run{_holder(fd)} is writing to {folder.absolute()}; wait "
                f"for it to end, or give this run another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held.add(fd)
        yield
    finally:
        _held.discard(fd)
        os.close(fd)  # closing the last descriptor releases the lock
