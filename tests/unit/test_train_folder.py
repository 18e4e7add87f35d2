"""Finding checkpoints: complete ones only, newest over this run and the run it resumes."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steps.formats.train_folder import CHECKPOINT_RECORD, list_complete, newest_of, tag_for
from steps.runtime.distributed import DistContext
from steps.train.checkpoint_store import CheckpointStore


def _checkpoint(root: Path, step: int, world_size: int = 2, complete: bool = True) -> Path:
    folder = root / tag_for(step)
    folder.mkdir(parents=True)
    (folder / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    if complete:
        record = {"tag": folder.name, "step": step, "world_size": world_size}
        (folder / CHECKPOINT_RECORD).write_text(json.dumps(record))
    return folder


def test_a_checkpoint_without_its_record_is_never_found(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 20, complete=False)  # a save cut off before its record
    assert [c.record["step"] for c in list_complete(tmp_path)] == [10]
    assert newest_of([tmp_path]).uri == f"{tmp_path}/{tag_for(10)}"


def test_newest_over_this_run_and_the_resumed_one(tmp_path: Path) -> None:
    mine, earlier = tmp_path / "mine", tmp_path / "earlier"
    _checkpoint(mine, 10)
    _checkpoint(earlier, 30)
    _checkpoint(earlier, 20)
    assert newest_of([mine, earlier]).record["step"] == 30
    _checkpoint(mine, 30)
    assert newest_of([mine, earlier]).root == str(mine)  # a tie goes to this run's own
    assert newest_of([tmp_path / "none"]) is None


def test_another_world_size_or_stage_means_resharding(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "earlier", 40, world_size=4)
    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    store = CheckpointStore(str(tmp_path / "mine"), tmp_path / "staging", keep=2, ctx=ctx)
    found = store.find([str(tmp_path / "earlier")])
    assert found.record["step"] == 40
    assert store.reshapes(found, zero_stage=2)
    same = CheckpointStore(str(tmp_path / "mine"), tmp_path / "staging", keep=2, ctx=ctx)
    found.record.update(world_size=2, zero_stage=2)
    assert not same.reshapes(found, zero_stage=2) and same.reshapes(found, zero_stage=3)
