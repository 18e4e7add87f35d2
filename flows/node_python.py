"""The interpreter that local `@parallel` node tasks run in: this one.

Metaflow's local `@parallel` starts every node after the first as `python <flow> step ...`, the `python` found on
PATH (metaflow_environment.executable), not the interpreter running the flow. A flow started as
`.venv/bin/python flows/tune_flow.py run` without the virtual environment activated got a node 1 that died at once
(`No module named 'metaflow'`, in the control task's log only) while node 0 waited out the rendezvous timeout. The
flow's command line calls `run_nodes_with_this_python` first, so that PATH's `python` is the flow's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def run_nodes_with_this_python() -> None:
    found = shutil.which("python")
    # Folders, not resolved files: a virtual environment's `python` links to the very interpreter a bare `python`
    # may be, and only the folder tells the environment (its site-packages) apart.
    here = Path(os.path.abspath(sys.executable)).parent
    if found is not None and Path(os.path.abspath(found)).parent == here:
        return
    if not (here / "python").exists():
        return  # no `python` in the interpreter's folder (a system python3.x): Metaflow's lookup cannot reach it
    os.environ["PATH"] = os.pathsep.join([str(here), os.environ.get("PATH", "")])
