"""Checkpoint files are checked against their record before anything is unpickled, and never rewritten once complete.

A checkpoint's shards and RNG states are pickles (`torch.load(weights_only=False)`),
so a changed byte must stop convert, a resumed run and the fetch of a train folder a SageMaker
job published with a StorageError naming the file, before any of them is loaded. A complete checkpoint's
folder is never written into again (a retry re-saving step N at `max_steps`).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest
import torch

from steps.config import TrainConfig, TuneConfig
from steps.convert.consolidate import run_convert
from steps.dispatch.runner import publish_result
from steps.formats.train_folder import (
    CHECKPOINT_RECORD,
    CHECKPOINTS,
    METRICS_FILE,
    TRAIN_SUMMARY_FILE,
    VERIFY_LOGITS_FILE,
    CheckpointRecord,
    list_complete,
    tag_for,
)
from steps.runtime.distributed import DistContext
from steps.runtime.storage import StorageError, fetch, file_sha256, open_storage
from steps.runtime.storage.manifest import file_entry
from steps.stages import TRAIN
from steps.train.checkpoints import CheckpointError, CheckpointManager, CheckpointPlace, TrainingPosition
from tests.support.card_results import train_summary
from tests.support.zero_files import write_zero_checkpoint

CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


class FakeEngine:
    """Writes and loads DeepSpeed-named pickles the way `engine.save_checkpoint`/`load_checkpoint` would."""

    def __init__(self, value: float, crash_after: str | None = None) -> None:
        self.value, self.crash_after, self.loads = value, crash_after, 0
        config = SimpleNamespace(save_pretrained=lambda d: (Path(d) / "config.json").write_text("{}"))
        self.module = SimpleNamespace(config=config, parameters=lambda: iter(()))

    def save_checkpoint(self, save_dir: str, tag: str, client_state: dict, save_latest: bool) -> None:
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("mp_rank_00_model_states.pt", OPTIM):
            torch.save({"w": torch.full((64,), self.value)}, folder / name)
            if name == self.crash_after:
                raise RuntimeError("killed mid-save")

    def load_checkpoint(self, root: str, tag: str) -> tuple[str, dict]:
        self.loads += 1
        return root, {}

    def zero_optimization_stage(self) -> int:
        return 2


def manager_for(root: str, staging: Path, keep: int = 2) -> CheckpointManager:
    return CheckpointManager(CheckpointPlace(root, staging), TrainConfig(keep_checkpoints=keep), CTX)


def save(root: str, staging: Path, engine: FakeEngine, step: int) -> str:
    return manager_for(root, staging).save(engine, step, "0" * 64, TrainingPosition(0, 0), None)


@pytest.fixture
def unpickled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file torch.load opens from now on."""
    opened: list[str] = []
    real = torch.load

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return opened


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(params=["local", "s3"])
def checkpoint_root(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "checkpoints")
    request.getfixturevalue("aws_env")
    bucket = f"ckpt-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/run/train/checkpoints"


@pytest.mark.parametrize("damaged", [OPTIM, "rng-rank0.pt"])
def test_resume_refuses_a_changed_file_before_unpickling_it(
    checkpoint_root: str, tmp_path: Path, unpickled: list[str], damaged: str
) -> None:
    save(checkpoint_root, tmp_path / "staging", FakeEngine(1.0), 10)
    stored = open_storage(checkpoint_root)
    local = tmp_path / "damaged"
    stored.get_file(f"{tag_for(10)}/{damaged}", local)
    _flip_a_byte(local)
    stored.put_file(local, f"{tag_for(10)}/{damaged}")

    resumed = manager_for(checkpoint_root, tmp_path / "staging-2")
    engine, found = FakeEngine(0.0), resumed.find()
    unpickled.clear()
    with pytest.raises(StorageError, match=f"changed {damaged}"):
        resumed.load(engine, found, tmp_path / "metrics.jsonl", universal=False, init_sha256="0" * 64)
    assert engine.loads == 0 and unpickled == []


def test_resume_loads_an_intact_checkpoint(checkpoint_root: str, tmp_path: Path) -> None:
    save(checkpoint_root, tmp_path / "staging", FakeEngine(1.0), 10)
    engine, store = FakeEngine(0.0), manager_for(checkpoint_root, tmp_path / "staging")
    store.load(engine, store.find(), tmp_path / "metrics.jsonl", universal=False, init_sha256="0" * 64)
    assert engine.loads == 1


def test_a_complete_checkpoint_is_never_written_into_again(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    save(str(root), tmp_path / "staging", FakeEngine(1.0), 40)
    folder = root / tag_for(40)
    before = _hashes(folder)
    # A retry resumed at max_steps saves step 40 again and is killed halfway through.
    uri = save(str(root), tmp_path / "staging", FakeEngine(2.0, crash_after="mp_rank_00_model_states.pt"), 40)
    assert uri == f"{root}/{tag_for(40)}"
    assert _hashes(folder) == before
    record = CheckpointRecord.model_validate_json((folder / CHECKPOINT_RECORD).read_text())
    assert all(file_sha256(folder / e.path) == e.sha256 for e in record.files)


def test_a_torn_save_is_cleared_before_the_step_is_saved_again(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    torn = root / tag_for(40)
    torn.mkdir(parents=True)
    (torn / "zero_pp_rank_5_mp_rank_00_optim_states.pt").write_bytes(b"from a 6-rank attempt")
    save(str(root), tmp_path / "staging", FakeEngine(1.0), 40)
    record = CheckpointRecord.model_validate_json((torn / CHECKPOINT_RECORD).read_text())
    assert "zero_pp_rank_5_mp_rank_00_optim_states.pt" not in {e.path for e in record.files}
    assert not (torn / "zero_pp_rank_5_mp_rank_00_optim_states.pt").exists()
    assert [c.step for c in list_complete(root)] == [40]


def _train_folder(train: Path) -> Path:
    """A train folder as convert reads it: one ZeRO-2 checkpoint with its record, no manifest."""
    generator = torch.Generator().manual_seed(0)
    params = {"embed.weight": torch.randn(7, 5, generator=generator)}
    folder = write_zero_checkpoint(train / CHECKPOINTS / tag_for(10), params, stage=2, world_size=2)
    (folder / "config.json").write_text("{}")
    files = [file_entry(p, p.name) for p in sorted(folder.iterdir())]
    record = CheckpointRecord(
        tag=folder.name,
        step=10,
        world_size=2,
        zero_stage=2,
        init_sha256="0" * 64,
        tokens_seen=0,
        blocks_seen=0,
        files=files,
    )
    (folder / CHECKPOINT_RECORD).write_text(record.model_dump_json())
    return folder


def test_convert_refuses_a_changed_shard_before_unpickling(tmp_path: Path, unpickled: list[str]) -> None:
    folder = _train_folder(tmp_path / "train")
    _flip_a_byte(folder / "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    with pytest.raises(StorageError, match="changed zero_pp_rank_1_mp_rank_00_optim_states.pt"):
        run_convert(TuneConfig(), tmp_path / "train", tmp_path / "tokenizer", tmp_path / "out")
    assert unpickled == [] and not (tmp_path / "out").exists()


def test_convert_refuses_a_file_the_record_does_not_list(tmp_path: Path, unpickled: list[str]) -> None:
    folder = _train_folder(tmp_path / "train")
    (folder / "zero_pp_rank_2_mp_rank_00_optim_states.pt").write_bytes(b"planted")
    with pytest.raises(StorageError, match="unexpected zero_pp_rank_2"):
        run_convert(TuneConfig(), tmp_path / "train", tmp_path / "tokenizer", tmp_path / "out")
    assert unpickled == []


def test_a_train_folder_a_sagemaker_job_left_with_a_changed_checkpoint_file_is_refused_when_fetched(
    aws_env, tmp_path: Path
) -> None:
    """SageMaker syncs the job's checkpoints into the run's train/checkpoints; the published folder's manifest takes
    each file's hash from the checkpoint's record, so a byte changed on the way fails the fetch that reads it."""
    boto3.client("s3").create_bucket(Bucket="collect")
    storage = open_storage("s3://collect/TuneFlow/1/files")
    checkpoints = storage.child(f"train/{CHECKPOINTS}")
    folder = _train_folder(tmp_path / "job")
    _flip_a_byte(folder / OPTIM)  # after the record was written: the bytes SageMaker uploaded are not those
    for path in sorted(folder.iterdir()):
        checkpoints.put_file(path, f"{folder.name}/{path.name}")
    out = tmp_path / "job-output"  # what the job's first host wrote to /opt/ml/model
    out.mkdir()
    (out / TRAIN_SUMMARY_FILE).write_text(json.dumps(train_summary()))
    (out / METRICS_FILE).write_text("")
    (out / VERIFY_LOGITS_FILE).write_bytes(b"logits")
    result = publish_result(TRAIN, storage, "train", out, {})
    with pytest.raises(StorageError, match=f"{OPTIM}: downloaded bytes do not match the manifest"):
        fetch(result.checkpoint, tmp_path / "fetched")


def test_resume_refuses_a_record_that_names_a_file_outside_the_checkpoint(aws_env, tmp_path: Path) -> None:
    bucket = f"ckpt-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/run/train/checkpoints"
    save(root, tmp_path / "staging", FakeEngine(1.0), 10)
    stored = open_storage(root)
    record = json.loads(stored.get_text(f"{tag_for(10)}/{CHECKPOINT_RECORD}"))
    record["files"].append({"path": "../../../escaped.pt", "bytes": 1, "sha256": "0" * 64})
    stored.put_text(f"{tag_for(10)}/{CHECKPOINT_RECORD}", json.dumps(record))
    key = f"run/train/checkpoints/{tag_for(10)}/../../../escaped.pt"  # object keys are plain strings
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"planted")
    resumed = manager_for(root, tmp_path / "work" / "staging")
    with pytest.raises(StorageError, match="leads outside"):
        resumed.load(FakeEngine(0.0), resumed.find(), tmp_path / "metrics.jsonl", universal=False, init_sha256="0" * 64)
    assert not list(tmp_path.rglob("escaped.pt"))


def test_every_host_prunes_its_own_copies_to_what_rank_0_keeps(tmp_path: Path, monkeypatch) -> None:
    """A SageMaker host other than the first writes its ranks' shards to its own /opt/ml/checkpoints, where no
    record is: its first rank removes the tags rank 0 no longer keeps, so the host's volume does not fill up."""
    host_1 = DistContext(rank=1, world_size=2, local_rank=0, device=torch.device("cpu"), node_rank=1)
    rank_0_keeps: list[str] = []

    def gather(obj):  # rank 0 (on the first host) contributes to each of save's collectives, then this rank
        if isinstance(obj, bool):
            return [False, obj]  # the step is not complete yet
        if obj == []:
            return [rank_0_keeps, obj]  # what rank 0 kept after writing the record
        return [[], obj]  # the files this host's ranks wrote

    monkeypatch.setattr("steps.train.checkpoints.all_gather_objects", gather)
    root = tmp_path / "host-1" / "opt" / "ml" / "checkpoints"
    place = CheckpointPlace(str(root), tmp_path / "staging")
    manager = CheckpointManager(place, TrainConfig(keep_checkpoints=2), host_1)
    for step in (3, 6, 9):
        rank_0_keeps[:] = [tag_for(s) for s in (3, 6, 9) if s <= step][-2:]
        manager.save(FakeEngine(float(step)), step, "0" * 64, TrainingPosition(0, 0), None)
    assert sorted(p.name for p in root.iterdir()) == [tag_for(6), tag_for(9)]
    assert list_complete(root) == []  # the records are on the first host only


def test_the_default_staging_is_private_and_fresh_never_a_name_someone_could_plant(tmp_path: Path) -> None:
    """Without a staging folder given (the entry point run by hand), each run makes its own: a predictable
    `tune-checkpoint-staging-<hash of out>` in the system's temporary folder could hold a crashed run's or another
    user's files, which a resume would then load."""
    root = str(tmp_path / "checkpoints")
    first, second = (CheckpointManager(CheckpointPlace(root), TrainConfig(), CTX) for _ in range(2))
    assert first.staging != second.staging and first.staging.is_dir() and not any(first.staging.iterdir())
    assert oct(first.staging.stat().st_mode & 0o777) == "0o700"  # mkdtemp: this user's alone
    first.close()
    assert not first.staging.exists() and second.staging.exists()  # each removes its own, at the end


def test_a_universal_checkpoint_is_made_anew_never_taken_from_the_staging_folder(tmp_path: Path, monkeypatch) -> None:
    """A universal checkpoint already in the staging folder (a crashed earlier attempt, or planted) is removed and
    converted again from the verified checkpoint: its pickles are loaded with weights_only=False."""
    save(str(tmp_path / "checkpoints"), tmp_path / "staging", FakeEngine(1.0), 10)
    manager = manager_for(str(tmp_path / "checkpoints"), tmp_path / "staging")
    planted = tmp_path / "staging" / "universal" / tag_for(10)
    planted.mkdir(parents=True)
    (planted / "mp_rank_00_model_states.pt").write_bytes(b"planted")
    converted: list[list[str]] = []

    def ds_to_universal(command, **kwargs):
        converted.append(command)
        assert not planted.exists()  # gone before the conversion writes there
        planted.mkdir(parents=True)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr("steps.train.checkpoints.subprocess.run", ds_to_universal)
    manager._to_universal(tmp_path / "checkpoints", manager.find())
    assert len(converted) == 1 and not (planted / "mp_rank_00_model_states.pt").exists()


def test_resume_refuses_a_checkpoint_of_training_that_started_from_other_weights(tmp_path: Path) -> None:
    """LoRA adapters continued on another base (or a run resumed with another model) would be nonsense: the
    checkpoint's record holds the fingerprint of the weights its training started from."""
    root = str(tmp_path / "checkpoints")
    save(root, tmp_path / "staging", FakeEngine(1.0), 10)
    resumed, engine = manager_for(root, tmp_path / "staging-2"), FakeEngine(0.0)
    with pytest.raises(CheckpointError, match=r"started from other weights \(fingerprint 000000000000, this run's: "):
        resumed.load(engine, resumed.find(), tmp_path / "metrics.jsonl", universal=False, init_sha256="1" * 64)
    assert engine.loads == 0


def test_a_fetched_train_folder_whose_manifest_does_not_list_the_checkpoint_is_refused(
    tmp_path: Path, unpickled: list[str]
) -> None:
    """A reference resolves to the very files it was made for: a checkpoint added beside a published train folder
    (its record and files self-consistent, but in no manifest) is never converted."""
    train = tmp_path / "train"
    _train_folder(train)
    (train / VERIFY_LOGITS_FILE).write_bytes(b"logits")
    published = open_storage(tmp_path / "store").publish(train, "train")
    planted = write_zero_checkpoint(train / CHECKPOINTS / tag_for(20), {"embed.weight": torch.ones(7, 5)}, 2, 2)
    files = [file_entry(p, p.name) for p in sorted(planted.iterdir())]
    record = CheckpointRecord(
        tag=planted.name, step=20, world_size=2, zero_stage=2, init_sha256="0" * 64, tokens_seen=0, blocks_seen=0,
        files=files,
    )  # fmt: skip
    stored = tmp_path / "store" / "train" / CHECKPOINTS / planted.name
    stored.mkdir(parents=True)
    for path in planted.iterdir():
        (stored / path.name).write_bytes(path.read_bytes())
    (stored / CHECKPOINT_RECORD).write_text(record.model_dump_json())
    fetched = fetch(published, verify=False)  # how convert takes its train folder: the manifest checked, files not
    with pytest.raises(StorageError, match=rf"{tag_for(20)}/{CHECKPOINT_RECORD}: not in the train folder's"):
        run_convert(TuneConfig(), fetched, tmp_path / "tokenizer", tmp_path / "out")
    assert unpickled == []
