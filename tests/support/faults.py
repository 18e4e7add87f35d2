"""Fault injection for tests: wait for a complete checkpoint, then SIGKILL one training rank."""

from __future__ import annotations

import glob
import os
import signal
import time

import psutil


def wait_for(pattern: str, timeout_s: float = 300.0) -> str:
    """The first path matching a glob pattern, polling until it appears."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.05)
    raise TimeoutError(f"nothing matched {pattern} within {timeout_s} s")


def training_rank(rank: int) -> psutil.Process:
    """The `steps.train` process that torchrun started as global rank `rank`, among this test's descendants."""
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = proc.cmdline()
            if "steps.train" in cmdline and "torch.distributed.run" not in cmdline:
                if proc.environ().get("RANK") == str(rank):
                    return proc
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    raise LookupError(f"no steps.train process with RANK={rank} is running")


def kill_rank_after_checkpoint(checkpoint_glob: str, rank: int = 1, timeout_s: float = 300.0) -> int:
    """Once a complete checkpoint matches `checkpoint_glob`, SIGKILL the rank; returns its pid."""
    wait_for(checkpoint_glob, timeout_s)
    proc = training_rank(rank)
    os.kill(proc.pid, signal.SIGKILL)
    return proc.pid
