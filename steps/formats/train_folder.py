"""The train folder: what training leaves in the run's storage, and how checkpoints are laid out in it.

    <train>/checkpoints/step-0000040/   DeepSpeed's shards from every rank of every machine, the
                                        model config, rng-rank<r>.pt, metrics.jsonl so far, and
                                        checkpoint.json, the checkpoint record, written last
    <train>/metrics.jsonl               one record per logged step
    <train>/train_summary.json          `steps.results.TrainSummary`
    <train>/verify_logits.pt            the trained engine's logits on a fixed held-out batch
    <train>/logs/node-<i>.log           every node's torchrun output

A checkpoint without its record is incomplete and never loaded. The record holds
the step, world size, ZeRO stage, data position and every file's size and hash.
Train writes this layout, convert reads it, and a resumed run or a SageMaker job
finds its newest complete checkpoint through `newest_of`; nothing here needs torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.runtime.storage import Storage, open_storage
from steps.runtime.storage.manifest import text_entry

CHECKPOINTS = "checkpoints"
CHECKPOINT_RECORD = "checkpoint.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"
VERIFY_LOGITS_FILE = "verify_logits.pt"
LOGS = "logs"
OUTPUT_FILES = (METRICS_FILE, SUMMARY_FILE, VERIFY_LOGITS_FILE)
"""The files beside the checkpoints that make a train folder (a SageMaker job ships them as its model output)."""
VERIFY_BLOCKS, VERIFY_TOKENS = 2, 64
"""The held-out batch of the logits check: the first blocks of validation, cut to this many tokens."""


def tag_for(step: int) -> str:
    return f"step-{step:07d}"


@dataclass(frozen=True)
class FoundCheckpoint:
    root: str
    """The checkpoint root it lives under (this run's, or an earlier run's)."""
    record: dict[str, Any]
    """Its checkpoint.json: tag, step, world_size, zero_stage, data position, files."""

    @property
    def uri(self) -> str:
        return f"{self.root}/{self.record['tag']}"

    @property
    def step(self) -> int:
        return self.record["step"]


def _storage(root: str | Path | Storage) -> Storage:
    return root if isinstance(root, Storage) else open_storage(root)


def list_complete(root: str | Path | Storage) -> list[FoundCheckpoint]:
    """Every checkpoint under `root` (a folder or object-store prefix) with a record, oldest first."""
    storage = _storage(root)
    found = []
    for relative in storage.list():
        parts = relative.split("/")
        if len(parts) == 2 and parts[1] == CHECKPOINT_RECORD:
            text = storage.get_text(relative)
            if text:
                found.append(FoundCheckpoint(storage.root, json.loads(text)))
    return sorted(found, key=lambda c: c.step)


def newest_of(roots: Sequence[str | Path | Storage]) -> FoundCheckpoint | None:
    """The newest complete checkpoint over several roots; on a tie the first root wins."""
    best = None
    for root in roots:
        complete = list_complete(root)
        if complete and (best is None or complete[-1].step > best.step):
            best = complete[-1]
    return best


def newest_checkpoint(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint in a local folder and its record, if any."""
    found = newest_of([root])
    return None if found is None else (Path(found.uri), found.record)


def checkpoint_entries(root: str | Storage, under: str = CHECKPOINTS) -> list[dict[str, Any]]:
    """Manifest entries of every kept checkpoint under `root`, paths below `under`, for sealing the train folder."""
    storage = _storage(root)
    entries = []
    for found in list_complete(storage):
        tag = found.record["tag"]
        entries += [{**e, "path": f"{under}/{tag}/{e['path']}"} for e in found.record["files"]]
        text = storage.get_text(f"{tag}/{CHECKPOINT_RECORD}") or ""
        entries.append(text_entry(f"{under}/{tag}/{CHECKPOINT_RECORD}", text))
    return entries
