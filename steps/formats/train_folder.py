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
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.runtime.storage import MANIFEST, Storage, StorageError, open_storage
from steps.runtime.storage.manifest import file_sha256, text_entry

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


def verify_checkpoint(folder: Path, record: dict[str, Any]) -> None:
    """Every file of a local checkpoint folder against the size and SHA-256 in its record.

    Runs before anything in the folder is unpickled (DeepSpeed's shards and the RNG
    states are pickles, loaded with `weights_only=False`): a changed, missing or extra
    file raises a StorageError naming it.
    """
    recorded = {entry["path"]: entry for entry in record["files"]}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {CHECKPOINT_RECORD}
    problems = [f"missing {path}" for path in sorted(set(recorded) - present)]
    for path in sorted(set(recorded) & present):
        entry = recorded[path]
        if (folder / path).stat().st_size != entry["bytes"] or file_sha256(folder / path) != entry["sha256"]:
            problems.append(f"changed {path}")
    problems += [f"unexpected {path}" for path in sorted(present - set(recorded))]
    if problems:
        raise StorageError(
            f"checkpoint {folder}: files differ from its {CHECKPOINT_RECORD}: {', '.join(problems[:5])}; "
            "refusing to load it (restore the files, or delete the folder to go back to an older checkpoint)"
        )


def verified_newest(train_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint of a local train folder, every file checked, and its record.

    Where the folder has its manifest (a fetched train folder), the checkpoint record and
    the logits to verify are checked against it too, so every file convert reads is tied
    to the reference the train step published.
    """
    found = newest_checkpoint(train_dir / CHECKPOINTS)
    if found is None:
        return None
    folder, record = found
    manifest_text = (train_dir / MANIFEST).read_text() if (train_dir / MANIFEST).is_file() else None
    if manifest_text is not None:
        hashes = {entry["path"]: entry["sha256"] for entry in json.loads(manifest_text)["files"]}
        for path in (f"{CHECKPOINTS}/{folder.name}/{CHECKPOINT_RECORD}", VERIFY_LOGITS_FILE):
            if path in hashes and (not (train_dir / path).is_file() or file_sha256(train_dir / path) != hashes[path]):
                raise StorageError(
                    f"{train_dir / path}: differs from the train folder's {MANIFEST}; refusing to load it"
                )
    verify_checkpoint(folder, record)
    return folder, record


def keep_verified_checkpoints(folder: Path) -> None:
    """Keep the complete checkpoints of a downloaded prefix, each file checked against its record.

    The prefix holds whatever the job's hosts left there (a spot interruption can leave a
    torn save): a folder without its record is dropped, a file that differs fails the step.
    """
    for checkpoint in sorted(p for p in folder.iterdir() if p.is_dir()):
        record = checkpoint / CHECKPOINT_RECORD
        if not record.is_file():
            print(f"not publishing {checkpoint.name}: it has no {CHECKPOINT_RECORD} (an interrupted save)", flush=True)
            shutil.rmtree(checkpoint)
            continue
        verify_checkpoint(checkpoint, json.loads(record.read_text()))
