"""Checkpoint files are checked against their record before anything is unpickled, and never rewritten once complete.

A checkpoint's shards and RNG states are pickles (`torch.load(weights_only=False)`),
so a changed byte must stop convert, a resumed run and the SageMaker collection with a
StorageError naming the file, before any of them is loaded. A complete checkpoint's
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

from steps.config import TuneConfig
from steps.convert.adapter import run_convert
from steps.dispatch.sagemaker_job import collect_train_folder, job_prefixes
from steps.formats.train_folder import (
    CHECKPOINT_RECORD,
    CHECKPOINTS,
    OUTPUT_FILES,
    list_complete,
    tag_for,
)
from steps.runtime.distributed import DistContext
from steps.runtime.storage import StorageError, file_sha256, open_storage
from steps.runtime.storage.manifest import file_entry
from steps.train.checkpoint_store import CheckpointStore
from tests.support.zero_files import write_zero_checkpoint

CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


class FakeEngine:
    """Writes and loads DeepSpeed-named pickles the way `engine.save_checkpoint`/`load_checkpoint` would."""

    def __init__(self, value: float, crash_after: str | None = None) -> None:
        self.value, self.crash_after, self.loads = value, crash_after, 0
        config = SimpleNamespace(save_pretrained=lambda d: (Path(d) / "config.json").write_text("{}"))
        self.module = SimpleNamespace(config=config)

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
    store = CheckpointStore(checkpoint_root, tmp_path / "staging", keep=2, ctx=CTX)
    store.save(FakeEngine(1.0), 10, {"tokens_seen": 0, "zero_stage": 2}, None)
    stored = open_storage(checkpoint_root)
    local = tmp_path / "damaged"
    stored.get_file(f"{tag_for(10)}/{damaged}", local)
    _flip_a_byte(local)
    stored.put_file(local, f"{tag_for(10)}/{damaged}")

    resumed = CheckpointStore(checkpoint_root, tmp_path / "staging-2", keep=2, ctx=CTX)
    engine, found = FakeEngine(0.0), resumed.find([])
    unpickled.clear()
    with pytest.raises(StorageError, match=f"changed {damaged}"):
        resumed.load(engine, found, tmp_path / "metrics.jsonl", universal=False)
    assert engine.loads == 0 and unpickled == []


def test_resume_loads_an_intact_checkpoint(checkpoint_root: str, tmp_path: Path) -> None:
    store = CheckpointStore(checkpoint_root, tmp_path / "staging", keep=2, ctx=CTX)
    store.save(FakeEngine(1.0), 10, {"tokens_seen": 0, "zero_stage": 2}, None)
    engine = FakeEngine(0.0)
    store.load(engine, store.find([]), tmp_path / "metrics.jsonl", universal=False)
    assert engine.loads == 1


def test_a_complete_checkpoint_is_never_written_into_again(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    store = CheckpointStore(str(root), tmp_path / "staging", keep=2, ctx=CTX)
    store.save(FakeEngine(1.0), 40, {"tokens_seen": 0, "zero_stage": 2}, None)
    folder = root / tag_for(40)
    before = _hashes(folder)
    # A retry resumed at max_steps saves step 40 again and is killed halfway through.
    retry = CheckpointStore(str(root), tmp_path / "staging", keep=2, ctx=CTX)
    uri = retry.save(FakeEngine(2.0, crash_after="mp_rank_00_model_states.pt"), 40, {"tokens_seen": 0}, None)
    assert uri == f"{root}/{tag_for(40)}"
    assert _hashes(folder) == before
    record = json.loads((folder / CHECKPOINT_RECORD).read_text())
    assert all(file_sha256(folder / e["path"]) == e["sha256"] for e in record["files"])


def test_a_torn_save_is_cleared_before_the_step_is_saved_again(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    torn = root / tag_for(40)
    torn.mkdir(parents=True)
    (torn / "zero_pp_rank_5_mp_rank_00_optim_states.pt").write_bytes(b"from a 6-rank attempt")
    store = CheckpointStore(str(root), tmp_path / "staging", keep=2, ctx=CTX)
    store.save(FakeEngine(1.0), 40, {"tokens_seen": 0, "zero_stage": 2}, None)
    record = json.loads((torn / CHECKPOINT_RECORD).read_text())
    assert "zero_pp_rank_5_mp_rank_00_optim_states.pt" not in {e["path"] for e in record["files"]}
    assert not (torn / "zero_pp_rank_5_mp_rank_00_optim_states.pt").exists()
    assert [c.step for c in list_complete(root)] == [40]


def _train_folder(train: Path) -> Path:
    """A train folder as convert reads it: one ZeRO-2 checkpoint with its record, no manifest."""
    generator = torch.Generator().manual_seed(0)
    params = {"embed.weight": torch.randn(7, 5, generator=generator)}
    folder = write_zero_checkpoint(train / CHECKPOINTS / tag_for(10), params, stage=2, world_size=2)
    (folder / "config.json").write_text("{}")
    files = [file_entry(p, p.name) for p in sorted(folder.iterdir())]
    record = {"tag": folder.name, "step": 10, "world_size": 2, "zero_stage": 2, "files": files}
    (folder / CHECKPOINT_RECORD).write_text(json.dumps(record))
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


def test_sagemaker_collection_refuses_a_changed_checkpoint_file(aws_env, tmp_path: Path) -> None:
    boto3.client("s3").create_bucket(Bucket="collect")
    storage = open_storage("s3://collect/TuneFlow/1/files")
    prefixes = job_prefixes(storage, "job")
    checkpoints = open_storage(prefixes["checkpoints"])
    folder = _train_folder(tmp_path / "job")
    for path in sorted(folder.iterdir()):
        checkpoints.put_file(path, f"{folder.name}/{path.name}")
    output = open_storage(f"{prefixes['output']}/job/output/model")
    for name in OUTPUT_FILES:
        output.put_text(name, "{}")
    _flip_a_byte(folder / OPTIM)
    checkpoints.put_file(folder / OPTIM, f"{folder.name}/{OPTIM}")
    with pytest.raises(StorageError, match=f"changed {OPTIM}"):
        collect_train_folder(storage, prefixes, "job")
    assert storage.list("train") == []  # nothing published


def test_resume_refuses_a_record_that_names_a_file_outside_the_checkpoint(aws_env, tmp_path: Path) -> None:
    bucket = f"ckpt-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/run/train/checkpoints"
    CheckpointStore(root, tmp_path / "staging", keep=2, ctx=CTX).save(FakeEngine(1.0), 10, {"tokens_seen": 0}, None)
    stored = open_storage(root)
    record = json.loads(stored.get_text(f"{tag_for(10)}/{CHECKPOINT_RECORD}"))
    record["files"].append({"path": "../../../escaped.pt", "bytes": 1, "sha256": "0" * 64})
    stored.put_text(f"{tag_for(10)}/{CHECKPOINT_RECORD}", json.dumps(record))
    key = f"run/train/checkpoints/{tag_for(10)}/../../../escaped.pt"  # object keys are plain strings
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"planted")
    resumed = CheckpointStore(root, tmp_path / "work" / "staging", keep=2, ctx=CTX)
    with pytest.raises(StorageError, match="leads outside"):
        resumed.load(FakeEngine(0.0), resumed.find([]), tmp_path / "metrics.jsonl", universal=False)
    assert not list(tmp_path.rglob("escaped.pt"))
