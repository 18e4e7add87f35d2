"""Fault injection for tests: one prepare shard's process dies as if the OOM killer took it.

No product hook: a `sitecustomize.py` in a folder of its own, put first on PYTHONPATH of one run only
(never this process's), is imported by every Python process that run starts. In the one that is
`python -m steps.prepare --phase read --shard K`, it replaces reading with a SIGKILL to itself, after
the shard's plan is saved: the controller sees exit code -9 and no error from the child.
"""

from __future__ import annotations

import os
from pathlib import Path

_SITECUSTOMIZE = """\
import os, signal, sys

_command = " ".join(getattr(sys, "orig_argv", [])) + " "
if " -m steps.prepare " in _command and " --phase read " in _command and " --shard {shard} " in _command:
    import steps.prepare.shard_read as _shard_read

    def _killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    _shard_read.read_shard = _killed  # plan_and_read_shard saves the plan first, then calls this
"""


def killing_prepare_shard(folder: Path, shard: int) -> dict[str, str]:
    """The environment (for a Runner's `env`) under which prepare shard `shard`'s read process is SIGKILLed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(shard=shard))
    path = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}
