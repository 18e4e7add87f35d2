"""Peak resident memory of a command, measured by the kernel for that process alone.

`os.wait4` returns the rusage of exactly the child it waits for, so earlier
children of the same process (other tests, torchrun jobs) cannot inflate the
figure the way `getrusage(RUSAGE_CHILDREN)` would. Peak RSS counts resident
file-backed pages too (memory-mapped checkpoint and safetensors files).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def peak_rss(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, int, float, str]:
    """(exit code, peak RSS in bytes, wall seconds, output) of running `command`."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024, time.perf_counter() - started, output


def baseline_command(model_config_dir: Path) -> list[str]:
    """A no-op with conversion's footprint before any weight is read.

    It imports what conversion imports and builds the architecture on the meta
    device (importing a model's modelling code alone costs ~100 MB of RSS), so
    subtracting it leaves the memory that holds weights.
    """
    code = (
        "import sys, torch; sys.path.insert(0, '.'); import steps.convert; "
        "from transformers import AutoConfig, AutoModelForCausalLM; "
        f"config = AutoConfig.from_pretrained({str(model_config_dir)!r}); "
        "torch.device('meta').__enter__(); AutoModelForCausalLM.from_config(config)"
    )
    return [sys.executable, "-c", code]
