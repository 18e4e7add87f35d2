"""Peak resident memory of a command, measured by the kernel for that process alone.

`os.wait4` returns the rusage of exactly the child it waits for, so earlier
children of the same process (other tests, torchrun jobs) cannot inflate the
figure the way `getrusage(RUSAGE_CHILDREN)` would. Peak RSS counts resident
file-backed pages too (memory-mapped checkpoint and safetensors files).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence


def peak_rss(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, int, float, str]:
    """(exit code, peak RSS in bytes, wall seconds, output) of running `command`."""
    started = time.perf_counter()
    process = subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024, time.perf_counter() - started, output
