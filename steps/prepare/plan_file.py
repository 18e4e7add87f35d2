"""The shard plan's file, named once; and which files a shard had, for the message of a shard that failed.

Torch- and reader-free: the runner reads it after a read task's child died (an error, or the OOM killer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PLAN_FILE = "plan.json"


def failed_shard_headline(out: Path, params: Mapping[str, Any], shown: int = 5) -> str:
    """`prepare shard 3 failed; its files: a.pdf, b.zip and 12 more`, from the plan the shard wrote first."""
    shard = int(params["shard"])
    plan = out / PLAN_FILE
    if not plan.is_file():
        return f"prepare shard {shard} failed; its files: not planned yet"
    raw = json.loads(plan.read_text())
    names = [raw["units"][part["unit"]]["name"] for part in raw["shards"][shard]]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"prepare shard {shard} failed; its files: " + (", ".join(names[:shown]) + more or "no files")
