"""Fault injection for tests: wait for a complete checkpoint, then SIGKILL or stop one training rank."""

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


def wait_for_pending_signal(proc: psutil.Process, signum: int, timeout_s: float = 300.0) -> None:
    """Wait until `signum` is pending for a (stopped) process: sent to it, not yet acted on."""
    bit = 1 << (signum - 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        # SigPnd: signals sent to the thread; ShdPnd: to the process (what kill(2) does).
        if (int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)) & bit:
            return
        time.sleep(0.05)
    raise TimeoutError(f"signal {signum} did not reach process {proc.pid} within {timeout_s} s")
