"""Every host of a multi-host SageMaker job prunes its own old checkpoints under /opt/ml/checkpoints.

Each host's ranks write their shards of every checkpoint to that host's own
/opt/ml/checkpoints (SageMaker syncs the folder to S3). The train loop's checkpoint
store prunes old checkpoints where the checkpoint record lives, which is the main
host only, so hosts 1…N−1 kept every checkpoint and filled their volume: those hosts
prune here (`host_pruner`), the main host is left to the train loop (which knows which
checkpoints are complete; a second pruner there only raced it). All hosts
save the same tags in lockstep (a barrier per save), so each host can keep its newest
`keep` step folders, plus the newest one while training runs (it may be mid-save):
a superset of what the main host keeps.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
from pathlib import Path

STEP_FOLDER = re.compile(r"step-(\d+)")


def prune_host_checkpoints(folder: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` step folders in `folder`; the names deleted."""
    if not folder.is_dir():
        return []
    steps = sorted(
        (p for p in folder.iterdir() if p.is_dir() and STEP_FOLDER.fullmatch(p.name)),
        key=lambda p: int(STEP_FOLDER.fullmatch(p.name).group(1)),
    )
    old = steps[:-keep] if keep > 0 else steps
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in old]


class HostCheckpointPruner:
    """While training runs, prune every `interval_s` keeping `keep + 1`; at a clean end, keep `keep`."""

    def __init__(self, folder: Path, keep: int, interval_s: float = 30.0) -> None:
        self.folder, self.keep, self.interval_s = folder, keep, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-pruner", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            prune_host_checkpoints(self.folder, self.keep + 1)

    def __enter__(self) -> HostCheckpointPruner:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        # After a failure the newest folder may be a half-written save: keep one more, as while running.
        prune_host_checkpoints(self.folder, self.keep if exc_type is None else self.keep + 1)


def host_pruner(folder: Path, keep: int, node_rank: int) -> contextlib.AbstractContextManager:
    """The pruner of host `node_rank`'s checkpoint folder: none on the main host, where the train loop prunes."""
    return HostCheckpointPruner(folder, keep) if node_rank > 0 else contextlib.nullcontext()
