"""The train folder: what training leaves in the run's storage, and how its checkpoints are laid out and read.

    <train>/checkpoints/step-0000040/   DeepSpeed's shards from every rank of every machine, the
                                        model config, rng-rank<r>.pt, metrics.jsonl so far, and
                                        checkpoint.json, the checkpoint record, written last
    <train>/metrics.jsonl               one record per logged step
    <train>/train_summary.json          `steps.results.TrainSummary`
    <train>/verify_logits.pt            the trained engine's logits on a fixed held-out batch
    <train>/logs/node-<i>.log           every node's torchrun output

A checkpoint without its record is incomplete and never loaded. The record
(`CheckpointRecord`) holds the step, world size, ZeRO stage, data position, the
fingerprint of the weights training started from and every file's size and hash.
This module is the layout and its readers, without torch: convert reads the
newest complete checkpoint through `verified_newest`, the runner seals the folder
with `checkpoint_entries`. Writing, pruning and resuming are
`steps.train.checkpoints.CheckpointManager`'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from steps.results import TrainMetric
from steps.runtime.storage import MANIFEST, Storage, StorageError, open_storage
from steps.runtime.storage.manifest import file_sha256, text_entry

CHECKPOINTS = "checkpoints"
CHECKPOINT_RECORD = "checkpoint.json"
METRICS_FILE = "metrics.jsonl"
TRAIN_SUMMARY_FILE = "train_summary.json"
VERIFY_LOGITS_FILE = "verify_logits.pt"
VERIFY_BLOCKS, VERIFY_TOKENS = 2, 64
"""The held-out batch of the logits check: the first blocks of validation, cut to this many tokens."""


def tag_for(step: int) -> str:
    return f"step-{step:07d}"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    bytes: int
    sha256: str


class CheckpointRecord(BaseModel):
    """checkpoint.json: what a complete checkpoint holds and where training stood when it was saved."""

    model_config = ConfigDict(extra="forbid")
    tag: str
    step: int
    world_size: int
    zero_stage: int
    init_sha256: str
    """Fingerprint of the weights training started from (evaluate rebuilds the untuned model and checks it)."""
    tokens_seen: int
    blocks_seen: int
    """Training blocks consumed: where the data stream continues, whatever the batch per step is on resume."""
    files: list[FileEntry]


@dataclass(frozen=True)
class FoundCheckpoint:
    root: str
    """The checkpoint root it lives under (this run's, or an earlier run's)."""
    record: CheckpointRecord

    @property
    def uri(self) -> str:
        return f"{self.root}/{self.record.tag}"

    @property
    def step(self) -> int:
        return self.record.step


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
                found.append(FoundCheckpoint(storage.root, CheckpointRecord.model_validate_json(text)))
    return sorted(found, key=lambda c: c.step)


def newest_of(roots: Sequence[str | Path | Storage]) -> FoundCheckpoint | None:
    """The newest complete checkpoint over several roots; on a tie the first root wins."""
    best = None
    for root in roots:
        complete = list_complete(root)
        if complete and (best is None or complete[-1].step > best.step):
            best = complete[-1]
    return best


def checkpoint_entries(root: str | Storage, under: str = CHECKPOINTS) -> list[dict]:
    """Manifest entries of every kept checkpoint under `root`, paths below `under`, for sealing the train folder."""
    storage = _storage(root)
    entries = []
    for found in list_complete(storage):
        tag = found.record.tag
        entries += [{**e.model_dump(), "path": f"{under}/{tag}/{e.path}"} for e in found.record.files]
        text = storage.get_text(f"{tag}/{CHECKPOINT_RECORD}") or ""
        entries.append(text_entry(f"{under}/{tag}/{CHECKPOINT_RECORD}", text))
    return entries


def verify_checkpoint(folder: Path, record: CheckpointRecord) -> None:
    """Every file of a local checkpoint folder against the size and SHA-256 in its record.

    Runs before anything in the folder is unpickled (DeepSpeed's shards and the RNG
    states are pickles, loaded with `weights_only=False`): a changed, missing or extra
    file raises a StorageError naming it.
    """
    recorded = {entry.path: entry for entry in record.files}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {CHECKPOINT_RECORD}
    problems = [f"missing {path}" for path in sorted(set(recorded) - present)]
    for path in sorted(set(recorded) & present):
        entry = recorded[path]
        if (folder / path).stat().st_size != entry.bytes or file_sha256(folder / path) != entry.sha256:
            problems.append(f"changed {path}")
    problems += [f"unexpected {path}" for path in sorted(present - set(recorded))]
    if problems:
        raise StorageError(
            f"checkpoint {folder}: files differ from its {CHECKPOINT_RECORD}: {', '.join(problems[:5])}; "
            "refusing to load it (restore the files, or delete the folder to go back to an older checkpoint)"
        )


def verified_newest(train_dir: Path) -> tuple[Path, CheckpointRecord] | None:
    """The newest complete checkpoint of a train folder, every file checked, and its record.

    A fetched folder has its manifest (the one its reference's hash was checked against): that
    manifest must then list the checkpoint's record and the logits to verify, with their hashes, so
    every file convert reads is tied to the reference the train step published, never to whatever
    record lies beside it. A folder without one (training's own output, converted by hand) is checked
    against the checkpoint record alone.
    """
    found = newest_of([train_dir / CHECKPOINTS])
    if found is None:
        return None
    folder = Path(found.uri)
    manifest_file = train_dir / MANIFEST
    if manifest_file.is_file():
        hashes = {entry["path"]: entry["sha256"] for entry in json.loads(manifest_file.read_text())["files"]}
        for path in (f"{CHECKPOINTS}/{folder.name}/{CHECKPOINT_RECORD}", VERIFY_LOGITS_FILE):
            if path not in hashes:
                raise StorageError(f"{train_dir / path}: not in the train folder's {MANIFEST}; refusing to load it")
            if not (train_dir / path).is_file() or file_sha256(train_dir / path) != hashes[path]:
                raise StorageError(
                    f"{train_dir / path}: differs from the train folder's {MANIFEST}; refusing to load it"
                )
    verify_checkpoint(folder, found.record)
    return folder, found.record


def read_metrics(path: Path) -> list[TrainMetric]:
    """The complete records of a metrics.jsonl that may still be growing (a last line half-written is skipped)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return [TrainMetric.model_validate_json(line) for line in lines if line.endswith("}")]
