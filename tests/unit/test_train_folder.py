"""Finding checkpoints: complete ones only, newest over this run and the run it resumes."""

from __future__ import annotations

from pathlib import Path

import torch

from steps.config import TrainConfig
from steps.formats.train_folder import CHECKPOINT_RECORD, CheckpointRecord, list_complete, newest_of, tag_for
from steps.runtime.distributed import DistContext
from steps.train.checkpoints import CheckpointManager, CheckpointPlace


def _checkpoint(root: Path, step: int, world_size: int = 2, complete: bool = True) -> Path:
    folder = root / tag_for(step)
    folder.mkdir(parents=True)
    (folder / "mp_rank_00_model_states.pt").write_bytes(b"weights")
    if complete:
        record = CheckpointRecord(
            tag=folder.name,
            step=step,
            world_size=world_size,
            zero_stage=2,
            init_sha256="0" * 64,
            tokens_seen=step,
            blocks_seen=step,
            files=[],
        )
        (folder / CHECKPOINT_RECORD).write_text(record.model_dump_json())
    return folder


def test_a_checkpoint_without_its_record_is_never_found(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 20, complete=False)  # a save cut off before its record
    assert [c.step for c in list_complete(tmp_path)] == [10]
    assert newest_of([tmp_path]).uri == f"{tmp_path}/{tag_for(10)}"


def test_newest_over_this_run_and_the_resumed_one(tmp_path: Path) -> None:
    mine, earlier = tmp_path / "mine", tmp_path / "earlier"
    _checkpoint(mine, 10)
    _checkpoint(earlier, 30)
    _checkpoint(earlier, 20)
    assert newest_of([mine, earlier]).step == 30
    _checkpoint(mine, 30)
    assert newest_of([mine, earlier]).root == str(mine)  # a tie goes to this run's own
    assert newest_of([tmp_path / "none"]) is None


def test_another_world_size_or_stage_means_resharding(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "earlier", 40, world_size=4)
    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    place = CheckpointPlace(str(tmp_path / "mine"), tmp_path / "staging", resume_from=(str(tmp_path / "earlier"),))
    manager = CheckpointManager(place, TrainConfig(), ctx)
    found = manager.find()
    assert found.step == 40
    assert manager.reshapes(found, zero_stage=2)
    found.record.world_size = 2
    assert not manager.reshapes(found, zero_stage=2) and manager.reshapes(found, zero_stage=3)
