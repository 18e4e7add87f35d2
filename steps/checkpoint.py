"""DeepSpeed checkpoints that describe themselves and are never read half-written.

Every rank calls `save_checkpoint` (saving from rank 0 alone hangs under ZeRO);
after a barrier rank 0 writes the model config and `checkpoint.json` last. A
checkpoint folder without `checkpoint.json` is incomplete and skipped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from steps.distributed import DistContext, barrier

MANIFEST = "checkpoint.json"


def tag_for(step: int) -> str:
    return f"step-{step:07d}"


def save_checkpoint(engine, root: Path, step: int, state: dict[str, Any], ctx: DistContext, keep: int = 2) -> Path:
    """Save on every rank, then mark the checkpoint complete and drop old ones."""
    tag = tag_for(step)
    engine.save_checkpoint(str(root), tag=tag, client_state=state)
    barrier()
    folder = root / tag
    if ctx.is_main:
        engine.module.config.save_pretrained(str(folder))
        manifest = {"tag": tag, "step": step, "world_size": ctx.world_size, **state}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old[1], ignore_errors=True)
    barrier()
    return folder


def complete_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint with a manifest, oldest first."""
    found = []
    for manifest in Path(root).glob(f"*/{MANIFEST}"):
        found.append((json.loads(manifest.read_text())["step"], manifest.parent))
    return sorted(found)


def newest_checkpoint(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint and its manifest, if any."""
    complete = complete_checkpoints(root)
    if not complete:
        return None
    folder = complete[-1][1]
    return folder, json.loads((folder / MANIFEST).read_text())
