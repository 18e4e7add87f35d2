"""Temporary folders belong to the stage that made them and are gone when it ends, on success and on failure.

Every test points the temporary folder (TMPDIR, and `tempfile.tempdir` for this process)
at an empty folder of its own and looks at what is left in it afterwards. The stages'
children are replaced by fakes that check their inputs arrived and write their outputs
(or fail); the run's storage is S3 (the moto server), where every input is a download.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import boto3
import pytest

from steps.config import DataConfig, TuneConfig
from steps.convert import stage as convert_module
from steps.evaluate import stage as evaluate_module
from steps.formats.train_folder import SUMMARY_FILE
from steps.prepare import stage as prepare_module
from steps.prepare.corpus import CorpusError
from steps.prepare.documents import iter_documents, load_corpus
from steps.prepare.report import CorpusReport
from steps.results import ConversionRecord, TrainSummary
from steps.runtime.launch import LaunchError, Rendezvous
from steps.runtime.storage import Storage, open_storage
from steps.train import stage as train_module
from tests.unit.test_results import SUMMARY

LONG = "Attackers abuse CVE-2024-3094 in xz-utils to backdoor sshd through a poisoned build script. " * 4


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))  # child processes
    monkeypatch.setattr(tempfile, "tempdir", str(root))  # this one
    return root


def _left(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.iterdir())


@pytest.fixture
def s3_storage(aws_env) -> Storage:
    bucket = f"temp-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return open_storage(f"s3://{bucket}/TuneFlow/1/files")


def _s3_corpus(storage: Storage, bad: bool = False) -> str:
    for i in range(3):
        storage.put_text(f"corpus/report-{i}.txt", f"Report {i}. {LONG}")
    if bad:
        storage.put_text("corpus/broken.json", "{not json")
    storage.put_text("corpus-private/secret.txt", "a sibling prefix, never read")
    return storage.uri("corpus") + "/"


def test_an_s3_corpus_download_is_removed_once_read(s3_storage: Storage, temp_root: Path) -> None:
    documents, _ = load_corpus(DataConfig(corpus=_s3_corpus(s3_storage), min_chars=50))
    assert len(documents) == 3 and _left(temp_root) == []


def test_an_s3_corpus_download_is_removed_when_reading_fails(s3_storage: Storage, temp_root: Path) -> None:
    with pytest.raises(CorpusError, match="broken.json"):
        load_corpus(DataConfig(corpus=_s3_corpus(s3_storage, bad=True), min_chars=50, strict=True))
    assert _left(temp_root) == []


def test_an_s3_corpus_download_is_removed_when_the_reader_stops(s3_storage: Storage, temp_root: Path) -> None:
    def write_first() -> None:
        for _ in iter_documents(DataConfig(corpus=_s3_corpus(s3_storage), min_chars=50), CorpusReport()):
            raise OSError("disk full")  # the consumer fails, not the reader

    with pytest.raises(OSError, match="disk full"):
        write_first()
    assert _left(temp_root) == []


def _published(storage: Storage, tmp_path: Path, name: str, files: dict[str, str]):
    folder = tmp_path / "src" / name
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return storage.publish(folder, name)


def _base_model(storage: Storage) -> str:
    storage.put_text("base/config.json", "{}")
    storage.put_text("base/model.safetensors", "weights")
    return storage.uri("base")


def _arguments(args: list[str]) -> dict[str, Path]:
    return {args[i].removeprefix("--"): Path(args[i + 1]) for i in range(0, len(args) - 1, 2)}


def _config(storage: Storage) -> TuneConfig:
    return TuneConfig().with_overrides(**{"model.base_model": _base_model(storage)})


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_convert_removes_its_downloads_and_output(
    s3_storage: Storage, tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    checkpoint = _published(s3_storage, tmp_path, "train", {"checkpoints/step-0000001/shard.pt": "x"})
    tokenizer = _published(s3_storage, tmp_path, "tokenizer", {"tokenizer.json": "{}"})

    def child(module: str, args: list[str]) -> None:
        given = _arguments(args)
        assert (given["train"] / "checkpoints" / "step-0000001" / "shard.pt").is_file()
        assert (given["tokenizer"] / "tokenizer.json").is_file() and given["config"].is_file()
        assert all(temp_root in path.parents for path in given.values())
        given["out"].mkdir(parents=True)
        (given["out"] / "model.safetensors").write_text("weights")
        if fails:
            raise LaunchError("steps.convert exited with code 1")
        record = ConversionRecord(
            checkpoint="step-0000001", step=1, zero_stage=2, trained_world_size=1, dtype="fp32", tensors=1,
            parameters=1, written_bytes=4, shards=1, all_tensors_checked=True, max_logit_difference=0.0,
            tolerance=1e-4, logits_match=True, files=["model.safetensors"], tensor_checks=[],
        )  # fmt: skip
        (given["out"] / "conversion.json").write_text(record.model_dump_json())

    monkeypatch.setattr(convert_module, "run_module", child)
    if fails:
        with pytest.raises(LaunchError):
            convert_module.convert_stage(TuneConfig(), s3_storage, checkpoint, tokenizer)
    else:
        result = convert_module.convert_stage(TuneConfig(), s3_storage, checkpoint, tokenizer)
        assert s3_storage.get_text("convert/model/model.safetensors") == "weights" and result.conversion.step == 1
    assert _left(temp_root) == []


def test_prepare_removes_its_base_model_copy_when_the_child_fails(
    s3_storage: Storage, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def child(module: str, args: list[str]) -> None:
        given = _arguments(args)
        assert (given["base-model"] / "model.safetensors").read_text() == "weights"
        given["out"].mkdir(parents=True)
        (given["out"] / "half-written.arrow").write_text("...")
        raise LaunchError("steps.prepare exited with code 1")

    monkeypatch.setattr(prepare_module, "run_module", child)
    with pytest.raises(LaunchError):
        prepare_module.prepare_stage(_config(s3_storage), s3_storage)
    assert _left(temp_root) == []


def test_evaluate_removes_its_downloads_when_the_child_fails(
    s3_storage: Storage, tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _published(s3_storage, tmp_path, "model", {"model.safetensors": "w"})
    dataset = _published(s3_storage, tmp_path, "dataset", {"train/data.arrow": "d"})

    def child(module: str, args: list[str], nproc: int) -> None:
        given = _arguments(args)
        assert (given["model"] / "model.safetensors").is_file() and (given["dataset"] / "train/data.arrow").is_file()
        assert (given["base-model"] / "config.json").is_file()
        raise LaunchError("steps.evaluate under torchrun exited with code 1")

    monkeypatch.setattr(evaluate_module, "run_torchrun", child)
    with pytest.raises(LaunchError):
        evaluate_module.evaluate_stage(_config(s3_storage), s3_storage, model, dataset, TrainSummary(**SUMMARY))
    assert _left(temp_root) == []


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_train_removes_its_downloads_staging_and_workdir(
    s3_storage: Storage, tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    dataset = _published(s3_storage, tmp_path, "dataset", {"train/data.arrow": "d"})
    tokenizer = _published(s3_storage, tmp_path, "tokenizer", {"tokenizer.json": "{}"})

    def child(module: str, args: list[str], nproc: int, rdzv, timeout_s, log_file) -> None:
        given = _arguments([a for a in args if a != "--resume-from"])
        assert given["checkpoint-staging"].is_dir() and (given["base-model"] / "config.json").is_file()
        assert (given["dataset"] / "train/data.arrow").is_file() and (given["tokenizer"] / "tokenizer.json").is_file()
        (given["out"] / SUMMARY_FILE).write_text(TrainSummary(**SUMMARY).model_dump_json())
        (given["checkpoint-staging"] / "checkpoints").mkdir()
        if fails:
            raise LaunchError("steps.train under torchrun exited with code 1")

    monkeypatch.setattr(train_module, "run_torchrun", child)
    config, rdzv = _config(s3_storage), Rendezvous()
    if fails:
        with pytest.raises(LaunchError):
            train_module.train_stage(config, s3_storage, dataset, tokenizer, rdzv)
    else:
        result = train_module.train_stage(config, s3_storage, dataset, tokenizer, rdzv)
        assert result.summary.steps == SUMMARY["steps"] and s3_storage.get_text(f"train/{SUMMARY_FILE}")
    assert _left(temp_root) == []
