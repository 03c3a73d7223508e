"""One training run per output folder: a second run is refused at once, a killed one
leaves the folder free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, tiny_config

from dsod.engine.run_lock import LOCK_NAME, OutputFolderBusyError, claim_output_folder
from dsod.engine.trainer import train

# A stand-in for a first run: it holds the folder as train() does, then sleeps.
HOLDER = """
import sys, time
from dsod.engine.run_lock import claim_output_folder
with claim_output_folder(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold(out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_a_held_folder_fails_at_once_naming_it_and_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = _hold(out)
    try:
        # The data root does not exist: a run that did any work before claiming the folder
        # would fail on the data instead.
        config = tiny_config(
            tmp_path, data={"root": str(tmp_path / "nowhere"), "shapes_generate": False}
        )
        start = time.perf_counter()
        with pytest.raises(OutputFolderBusyError) as caught:
            train(config, out, progress=False)
        assert time.perf_counter() - start < 5
        message = str(caught.value)
        assert (
            f"another training run (pid {holder.pid}) is writing to {out.absolute()}" in message
            and "another --out" in message
        )
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_run_does_not_keep_the_folder(tmp_path):
    out = tmp_path / "run"
    holder = _hold(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with claim_output_folder(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    with claim_output_folder(out):  # and released again at the end of the block
        pass


def test_a_forked_child_does_not_hold_the_folder(tmp_path):
    out = tmp_path / "run"
    started, tell = os.pipe()
    with claim_output_folder(out):
        child = os.fork()
        if child == 0:  # as a DataLoader worker: it lives on when its parent is killed
            os.write(tell, b"x")
            time.sleep(3)
            os._exit(0)
        assert os.read(started, 1) == b"x"  # the child runs, holding what it inherited
    try:
        with claim_output_folder(out):  # the child's copy did not keep the lock
            pass
    finally:
        os.waitpid(child, 0)


def test_other_processes_of_a_distributed_run_claim_nothing(tmp_path):
    out = tmp_path / "run"
    with claim_output_folder(out):
        with claim_output_folder(out, enabled=False):
            pass
        with pytest.raises(OutputFolderBusyError):
            with claim_output_folder(out):  # a second descriptor, even in this process
                pass
