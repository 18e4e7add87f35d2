"""A torchrun rank whose entry point returned ends with exit code 0 whatever the interpreter's finalization would do.

A library's C++ destructor aborted an evaluation rank at exit after its work was done (steps.runtime.distributed
`exit_now_that_the_work_is_done`); here an exit handler that aborts stands in for it.
"""

from __future__ import annotations

import signal
import subprocess
import sys

ABORTING_AT_EXIT = (
    "import atexit, os; atexit.register(os.abort); "
    "from steps.runtime.distributed import exit_now_that_the_work_is_done; "
    "print('evaluate: done', flush=False); "
)


def test_a_rank_whose_work_is_done_exits_0_and_keeps_its_output_even_if_finalization_would_abort() -> None:
    done = subprocess.run([sys.executable, "-c", ABORTING_AT_EXIT + "exit_now_that_the_work_is_done()"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.endswith("evaluate: done\n")  # flushed before the process ended


def test_without_it_the_same_finalization_aborts_the_rank() -> None:
    # What the entry points did before: returning into the interpreter's exit.
    done = subprocess.run([sys.executable, "-c", ABORTING_AT_EXIT], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGABRT
