"""The one owner of a training run's checkpoints, in every rank: when to save, saving, pruning, resuming.

Layout and record are `steps.formats.train_folder`'s; this class is everything that
happens to them while training runs:

- **when**: every `train.checkpoint_every` steps and at the end (`should_save`);
- **saving**: every rank calls `save` (saving from rank 0 alone hangs under ZeRO). DeepSpeed
  writes into a local folder: the checkpoint root itself when the run's storage is on this
  machine (a SageMaker host's /opt/ml/checkpoints too), a staging folder of each machine
  otherwise, from which one process per machine stores what that machine's ranks wrote. The
  checkpoint record goes last, written by rank 0 once every rank's files are stored;
- **pruning**: rank 0 deletes all but the newest `train.keep_checkpoints` from the root, and the
  first rank of every machine removes the same tags from its own local folder, so that hosts
  whose disks are not the root's (SageMaker's hosts 1…N−1, staging folders) never fill up;
- **resuming**: the newest complete checkpoint of this run or, failing that, of the runs it
  resumes; every file is checked against its record before any rank unpickles one, the weights
  it started from must be this run's (their fingerprint), and a checkpoint written by another
  world size or ZeRO stage goes through DeepSpeed's universal format.

A model with frozen parameters (LoRA adapters on a base model) is checkpointed without them: the
adapters and their optimizer state, plus the adapter config (`adapter_config.json`), which convert
reads to put the adapters back on the same starting weights.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steps.config import TrainConfig
from steps.formats.train_folder import (
    CHECKPOINT_RECORD,
    METRICS_FILE,
    CheckpointRecord,
    FoundCheckpoint,
    list_complete,
    newest_of,
    tag_for,
    verify_checkpoint,
)
from steps.runtime.distributed import DistContext, all_gather_objects, all_reduce_sum, barrier
from steps.runtime.storage import StorageError, open_storage
from steps.runtime.storage.manifest import file_entry, local_target
from steps.train.lora import CHECKPOINT_LOAD, CHECKPOINT_SAVE


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be saved or resumed from as asked."""


@dataclass(frozen=True)
class CheckpointPlace:
    """Where checkpoints go, where this machine's ranks stage copies, and which earlier roots to resume from."""

    uri: str
    staging: Path | None = None
    """A local folder of this machine for copies, the same for all its ranks; None: a private temporary one."""
    resume_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainingPosition:
    """Where training stands: what a checkpoint records besides the weights and optimizer state."""

    tokens_seen: int
    blocks_seen: int


def seed_rng_states(seed: int, rank: int) -> None:
    """Seed every random state a rank's training draws from (LoRA's dropout masks) from the seed and the rank.

    Left as the process found them, the first draws depended on what had run before in it, which is not the same
    from one run to the next (two identical LoRA runs differed from their second step on): a resumed run, whose
    states come back from its checkpoint, could not end where an uninterrupted one does.
    """
    value = seed * 10_000 + rank  # each rank its own dropout masks
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


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


def trains_part(engine) -> bool:
    """Whether some parameters are frozen (LoRA): they are then neither saved nor expected when loading."""
    return any(not p.requires_grad for p in engine.module.parameters())


def _machine_staging(given: Path | None, ctx: DistContext) -> tuple[Path, bool]:
    """The staging folder all ranks of this machine share, and whether this manager made it (and removes it).

    Not a predictable name in the system's temporary folder: a folder left by a crashed run, or made by
    another user of the host, would be taken for ours. The first rank of each machine makes a private one
    and the others learn its path.
    """
    if given is not None:
        return given, False
    made = tempfile.mkdtemp(prefix="tune-checkpoint-staging-") if ctx.local_rank == 0 else None
    offers = all_gather_objects((ctx.node_rank, made))
    return Path(next(path for node, path in offers if node == ctx.node_rank and path)), True


class CheckpointManager:
    """Save to and resume from one training run's checkpoint root, on every rank."""

    def __init__(self, place: CheckpointPlace, train: TrainConfig, ctx: DistContext) -> None:
        self.storage = open_storage(place.uri)
        self.root = self.storage.root
        self.staging, self._owns_staging = _machine_staging(place.staging, ctx)
        self.resume_from = place.resume_from
        # DeepSpeed writes local files; where the storage is on this machine they are the stored files.
        self.in_place = self.storage.local_path is not None
        self.local = self.storage.local_path or self.staging / "checkpoints"
        self.local.mkdir(parents=True, exist_ok=True)
        self.every, self.keep, self.max_steps = train.checkpoint_every, train.keep_checkpoints, train.max_steps
        self.ctx = ctx

    @property
    def _node_leader(self) -> bool:
        return self.ctx.local_rank == 0

    def should_save(self, step: int) -> bool:
        """Every `checkpoint_every` steps, and always the last (the one convert reads)."""
        return step == self.max_steps or step % self.every == 0

    def save(self, engine, step: int, init_sha256: str, position: TrainingPosition, metrics_file: Path | None) -> str:
        tag = tag_for(step)
        folder = self.local / tag
        if self._start_fresh(tag):
            if self.ctx.is_main:
                print(f"{self.root}/{tag} is already complete; it is kept as it is, not saved again", flush=True)
            return f"{self.root}/{tag}"
        zero_stage = engine.zero_optimization_stage()
        state = {"init_sha256": init_sha256, "zero_stage": zero_stage, **vars(position)}
        partial = CHECKPOINT_SAVE if trains_part(engine) else {}
        engine.save_checkpoint(str(self.local), tag=tag, client_state=state, save_latest=False, **partial)
        torch.save(rng_states(), folder / f"rng-rank{self.ctx.rank}.pt")
        if self.ctx.is_main:
            engine.module.config.save_pretrained(str(folder))
            if hasattr(engine.module, "peft_config"):  # a PEFT model: how its adapters were made, for convert
                engine.module.peft_config["default"].save_pretrained(str(folder))
            if metrics_file is not None and metrics_file.is_file():
                shutil.copyfile(metrics_file, folder / METRICS_FILE)
        barrier()
        # One process per machine hashes (and, where the storage is elsewhere, uploads) the files its ranks wrote.
        entries = self._publish_node_files(folder) if self._node_leader else []
        files = {e["path"]: e for node in all_gather_objects(entries) for e in node}
        kept: list[str] = []
        if self.ctx.is_main:
            files = [files[path] for path in sorted(files)]
            record = CheckpointRecord(tag=tag, step=step, world_size=self.ctx.world_size, files=files, **state)
            self.storage.put_text(f"{tag}/{CHECKPOINT_RECORD}", record.model_dump_json(indent=1))
            complete = [c.record.tag for c in list_complete(self.storage)]
            for old in complete[: -self.keep]:
                self.storage.delete(old)
            kept = complete[-self.keep :]
        kept = next(k for k in all_gather_objects(kept) if k)
        if self._node_leader:
            self._prune_local(kept)
        return f"{self.root}/{tag}"

    def _prune_local(self, kept: list[str]) -> None:
        """This machine's own copies of checkpoints rank 0 no longer keeps (a no-op where they are the root's)."""
        for stale in self.local.glob("step-*"):
            if stale.name not in kept:
                shutil.rmtree(stale, ignore_errors=True)

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
        if self._node_leader:
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

    def find(self) -> FoundCheckpoint | None:
        """The newest complete checkpoint of this run or, failing that, of the runs it resumes."""
        return newest_of([self.root, *self.resume_from])

    def reshapes(self, found: FoundCheckpoint, zero_stage: int) -> bool:
        """Whether `found` was written by another number of ranks or ZeRO stage than this run has."""
        return found.record.world_size != self.ctx.world_size or found.record.zero_stage != zero_stage

    def _to_universal(self, local_root: Path, found: FoundCheckpoint) -> Path:
        """DeepSpeed's universal checkpoint of `found`, which loads on any world size and stage.

        Always made anew in this manager's staging folder, never taken from an earlier one: its
        pickles are loaded with `weights_only=False`, and only the verified checkpoint is trusted.
        """
        tag = found.record.tag
        target = self.staging / "universal"
        if self._node_leader:
            shutil.rmtree(target / tag, ignore_errors=True)
            command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--inject_missing_state"]
            command += ["--input_folder", str(local_root / tag), "--output_folder", str(target / tag)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
                raise CheckpointError(
                    f"checkpoint {found.uri} was written by {found.record.world_size} ranks and this run has "
                    f"{self.ctx.world_size}; converting it to a universal checkpoint failed (exit "
                    f"{done.returncode}). Resume with train.num_nodes x train.nproc_per_node = "
                    f"{found.record.world_size} instead.\n{tail}"
                )
        barrier()
        return target

    def _materialize(self, found: FoundCheckpoint) -> Path:
        """A local folder holding `found` for DeepSpeed to load; remote files are downloaded once per machine."""
        storage = open_storage(found.root)
        if storage.local_path is not None:
            return storage.local_path
        tag = found.record.tag
        target = self.staging / f"resume-{tag}"
        if self._node_leader:
            shutil.rmtree(target, ignore_errors=True)
            for entry in found.record.files:
                storage.get_file(f"{tag}/{entry.path}", local_target(target / tag, entry.path))
        barrier()
        return target

    def _verify(self, local_root: Path, found: FoundCheckpoint) -> None:
        """Every file of `found` against its record, once per machine, before any rank unpickles one."""
        problem = None
        if self._node_leader:
            try:
                verify_checkpoint(local_root / found.record.tag, found.record)
            except StorageError as exc:
                problem = str(exc)
        problems = [p for p in all_gather_objects(problem) if p]
        if problems:
            raise StorageError(problems[0])  # on every rank, so none waits in a collective for the others

    def load(
        self, engine, found: FoundCheckpoint, metrics_file: Path, universal: bool, init_sha256: str
    ) -> TrainingPosition:
        """Model, optimizer, scheduler and this rank's RNG states; the metrics log up to that step.

        `universal`: the checkpoint is converted first and the engine was configured with
        `checkpoint.load_universal`; RNG states stay fresh, as ranks no longer map one to one.
        `init_sha256`: the fingerprint of the weights this run starts from, which must be the checkpoint's
        (adapters continued on other base weights, or a run resumed with another model, would be nonsense).
        """
        if found.record.init_sha256 != init_sha256:
            raise CheckpointError(
                f"checkpoint {found.uri} continues training that started from other weights (fingerprint "
                f"{found.record.init_sha256[:12]}, this run's: {init_sha256[:12]}): the base model or model.* "
                "changed since it was saved; restore them, or delete the checkpoints to start afresh"
            )
        tag = found.record.tag
        local_root = self._materialize(found)
        self._verify(local_root, found)
        saved_metrics = local_root / tag / METRICS_FILE
        if universal:
            local_root = self._to_universal(local_root, found)
        partial = CHECKPOINT_LOAD if trains_part(engine) else {}
        load_path, _ = engine.load_checkpoint(str(local_root), tag=tag, **partial)
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
        return TrainingPosition(found.record.tokens_seen, found.record.blocks_seen)

    def close(self) -> None:
        """Remove the private staging folder once every rank is done with it (a given one is the caller's)."""
        barrier()
        if self._owns_staging and self._node_leader:
            shutil.rmtree(self.staging, ignore_errors=True)
