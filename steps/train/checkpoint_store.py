"""Saving and resuming DeepSpeed checkpoints from every rank, in the layout of `steps.formats.train_folder`.

Every rank calls `save` (saving from rank 0 alone hangs under ZeRO). DeepSpeed writes
into a local folder: the checkpoint root itself when the run's storage is on this
machine, a staging folder of each machine otherwise, from which one process per
machine stores what that machine's ranks wrote. The checkpoint record goes last.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steps.formats.train_folder import (
    CHECKPOINT_RECORD,
    METRICS_FILE,
    FoundCheckpoint,
    list_complete,
    newest_of,
    tag_for,
    verify_checkpoint,
)
from steps.runtime.distributed import DistContext, all_gather_objects, all_reduce_sum, barrier
from steps.runtime.storage import StorageError, open_storage
from steps.runtime.storage.manifest import file_entry, local_target


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be saved or resumed from as asked."""


def rng_states() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def check_weights(engine, expected_shapes: dict[str, torch.Size], device: torch.device) -> float:
    """The global weight norm; raises if a tensor has the wrong shape or the model is all zeros.

    Under ZeRO-3 each rank holds a slice (`ds_tensor`) and `param.shape` is empty: a
    naive save then writes a tiny, empty model. Shapes come from `ds_shape` there.
    """
    squares, zero3 = 0.0, False
    for name, param in engine.module.named_parameters():
        shape = getattr(param, "ds_shape", param.shape)
        if name in expected_shapes and tuple(shape) != tuple(expected_shapes[name]):
            expected = tuple(expected_shapes[name])
            raise CheckpointError(f"refusing to save: {name} has shape {tuple(shape)}, expected {expected}")
        local = getattr(param, "ds_tensor", None)
        zero3 = zero3 or local is not None
        squares += float((local if local is not None else param.data).float().pow(2).sum())
    # ZeRO-3 slices add up across ranks; other stages hold whole copies on each rank.
    total = all_reduce_sum([squares], device)[0]
    norm = (total if zero3 else squares) ** 0.5
    if not norm > 0:
        raise CheckpointError("refusing to save: the gathered weights are all zero (an empty ZeRO-3 gather?)")
    return norm


class CheckpointStore:
    """Save to and resume from one training run's checkpoint root, on every rank."""

    def __init__(self, root: str, staging: Path, keep: int, ctx: DistContext) -> None:
        """`staging`: a local folder of this machine, the same for all its ranks, outside the run's storage."""
        self.storage = open_storage(root)
        self.root = self.storage.root
        self.staging = staging
        # DeepSpeed writes local files; where the storage is on this machine they are the stored files.
        self.in_place = self.storage.local_path is not None
        self.local = self.storage.local_path or staging / "checkpoints"
        self.local.mkdir(parents=True, exist_ok=True)
        self.keep, self.ctx = keep, ctx

    @property
    def _node_leader(self) -> bool:
        return self.ctx.local_rank == 0

    def save(self, engine, step: int, state: dict[str, Any], metrics_file: Path | None) -> str:
        tag = tag_for(step)
        folder = self.local / tag
        if self._start_fresh(tag):
            if self.ctx.is_main:
                print(f"{self.root}/{tag} is already complete; it is kept as it is, not saved again", flush=True)
            return f"{self.root}/{tag}"
        engine.save_checkpoint(str(self.local), tag=tag, client_state=state, save_latest=False)
        torch.save(rng_states(), folder / f"rng-rank{self.ctx.rank}.pt")
        if self.ctx.is_main:
            engine.module.config.save_pretrained(str(folder))
            if metrics_file is not None and metrics_file.is_file():
                shutil.copyfile(metrics_file, folder / METRICS_FILE)
        barrier()
        # One process per machine hashes (and, where the storage is elsewhere, uploads) the files its ranks wrote.
        entries = self._publish_node_files(folder) if self._node_leader else []
        files = {e["path"]: e for node in all_gather_objects(entries) for e in node}
        if self.ctx.is_main:
            record = {"tag": tag, "step": step, "world_size": self.ctx.world_size, **state}
            record["files"] = sorted(files.values(), key=lambda e: e["path"])
            self.storage.put_text(f"{tag}/{CHECKPOINT_RECORD}", json.dumps(record, indent=1))
            for old in list_complete(self.storage)[: -self.keep]:
                self.storage.delete(old.record["tag"])
        barrier()
        if not self.in_place and self._node_leader:
            kept = {c.record["tag"] for c in list_complete(self.storage)}
            for stale in self.local.glob("step-*"):
                if stale.name not in kept:
                    shutil.rmtree(stale, ignore_errors=True)
        return f"{self.root}/{tag}"

    def _start_fresh(self, tag: str) -> bool:
        """True when `tag` is already complete (it must never be written into); else clears what a torn save left.

        A retry that resumes at `max_steps` saves that step again: writing into the complete
        folder while its record stands would leave, after a crash mid-save, torn files behind a
        record that says they are whole. Files of an incomplete attempt (another world size's
        shards among them) would otherwise join the new record.
        """
        complete = self.ctx.is_main and self.storage.get_text(f"{tag}/{CHECKPOINT_RECORD}") is not None
        if any(all_gather_objects(complete)):
            return True
        if self.ctx.is_main:
            self.storage.delete(tag)
        if not self.in_place and self._node_leader:
            shutil.rmtree(self.local / tag, ignore_errors=True)
        barrier()
        return False

    def _publish_node_files(self, folder: Path) -> list[dict[str, Any]]:
        entries = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            if relative == CHECKPOINT_RECORD:
                continue
            self.storage.put_file(path, f"{folder.name}/{relative}")  # nothing to copy when in place
            entries.append(file_entry(path, relative))
        return entries

    def find(self, earlier_roots: Sequence[str]) -> FoundCheckpoint | None:
        """The newest complete checkpoint of this run or, failing that, of the runs it resumes."""
        return newest_of([self.root, *earlier_roots])

    def reshapes(self, found: FoundCheckpoint, zero_stage: int) -> bool:
        """Whether `found` was written by another number of ranks or ZeRO stage than this run has."""
        return found.record["world_size"] != self.ctx.world_size or found.record.get("zero_stage") != zero_stage

    def _to_universal(self, local_root: Path, found: FoundCheckpoint) -> Path:
        """DeepSpeed's universal checkpoint of `found`, which loads on any world size and stage."""
        tag = found.record["tag"]
        target = self.staging / "universal"
        if self._node_leader and not (target / tag).is_dir():
            command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--inject_missing_state"]
            command += ["--input_folder", str(local_root / tag), "--output_folder", str(target / tag)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
                raise CheckpointError(
                    f"checkpoint {found.uri} was written by {found.record['world_size']} ranks and this run has "
                    f"{self.ctx.world_size}; converting it to a universal checkpoint failed (exit "
                    f"{done.returncode}). Resume with train.num_nodes x train.nproc_per_node = "
                    f"{found.record['world_size']} instead.\n{tail}"
                )
        barrier()
        return target

    def materialize(self, found: FoundCheckpoint) -> Path:
        """A local folder holding `found` for DeepSpeed to load; remote files are downloaded once per machine."""
        storage = open_storage(found.root)
        if storage.local_path is not None:
            return storage.local_path
        tag = found.record["tag"]
        target = self.staging / f"resume-{tag}"
        if self._node_leader:
            for entry in found.record["files"]:
                storage.get_file(f"{tag}/{entry['path']}", local_target(target / tag, entry["path"]))
        barrier()
        return target

    def _verify(self, local_root: Path, found: FoundCheckpoint) -> None:
        """Every file of `found` against its record, once per machine, before any rank unpickles one."""
        problem = None
        if self._node_leader:
            try:
                verify_checkpoint(local_root / found.record["tag"], found.record)
            except StorageError as exc:
                problem = str(exc)
        problems = [p for p in all_gather_objects(problem) if p]
        if problems:
            raise StorageError(problems[0])  # on every rank, so none waits in a collective for the others

    def load(self, engine, found: FoundCheckpoint, metrics_file: Path, universal: bool) -> None:
        """Model, optimizer, scheduler and this rank's RNG states; the metrics log up to that step.

        `universal`: the checkpoint is converted first and the engine was configured with
        `checkpoint.load_universal`; RNG states stay fresh, as ranks no longer map one to one.
        """
        tag = found.record["tag"]
        local_root = self.materialize(found)
        self._verify(local_root, found)
        saved_metrics = local_root / tag / METRICS_FILE
        if universal:
            local_root = self._to_universal(local_root, found)
        load_path, _ = engine.load_checkpoint(str(local_root), tag=tag)
        if load_path is None:
            raise CheckpointError(f"DeepSpeed could not load {found.uri}; the folder is damaged, delete it to go back")
        rng_file = local_root / tag / f"rng-rank{self.ctx.rank}.pt"
        if not universal and rng_file.is_file():
            restore_rng_states(torch.load(rng_file, weights_only=False))
        if self.ctx.is_main:
            if saved_metrics.is_file():
                shutil.copyfile(saved_metrics, metrics_file)
            else:
                metrics_file.unlink(missing_ok=True)
