"""Temporary folders belong to the stage that made them and are gone when it ends, on success and on failure.

Every test points the temporary folder (TMPDIR, and `tempfile.tempdir` for this process)
at an empty folder of its own and looks at what is left in it afterwards. The stages'
entry points are replaced by fakes that check their inputs arrived (and that their own
temporary folder is inside the stage's) and write their outputs (or fail); the run's storage
is S3 (the moto server), where every input is a download.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import boto3
import pytest

from steps.config import DataConfig, TuneConfig
from steps.dispatch import runner
from steps.dispatch.runner import Place, run_stage
from steps.formats.train_folder import TRAIN_SUMMARY_FILE
from steps.prepare.corpus import CorpusError
from steps.prepare.documents import iter_documents, load_corpus
from steps.prepare.report import CorpusReport
from steps.results import ConversionRecord, TrainSummary
from steps.runtime.launch import LaunchError
from steps.runtime.storage import Storage, open_storage
from steps.stages import CONVERT, EVALUATE, PREPARE, TRAIN
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


def _arguments(args: list[str]) -> dict[str, Path]:
    return {args[i].removeprefix("--"): Path(args[i + 1]) for i in range(0, len(args) - 1, 2)}


def _fake_entry(monkeypatch: pytest.MonkeyPatch, temp_root: Path, work) -> None:
    """The runner's launch replaced by `work(given arguments)`, after checking where the child's temp files go."""

    def launch(module, args, *launch_options, env=None, **more_options) -> None:
        given = _arguments([a for a in args if a not in ("--resume-from", "--phase")])
        remote = given.pop("checkpoint-uri", None)
        assert remote is None or str(remote).startswith("s3:/")
        # The child's own temporary files (an s3:// corpus, downloads) go inside the stage's scratch.
        assert Path(env["TMPDIR"]).is_dir() and Path(env["TMPDIR"]).parent == given["config"].parent
        assert all(temp_root in path.parents for path in given.values())
        work(given)

    monkeypatch.setattr(runner, "run_torchrun", launch)
    monkeypatch.setattr(runner, "run_module", launch)


def _place(storage: Storage) -> Place:
    return Place(storage=storage)


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_convert_removes_its_downloads_and_output(
    s3_storage: Storage, tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    checkpoint = _published(s3_storage, tmp_path, "train", {"checkpoints/step-0000001/shard.pt": "x"})
    tokenizer = _published(s3_storage, tmp_path, "tokenizer", {"tokenizer.json": "{}"})

    def child(given: dict[str, Path]) -> None:
        assert (given["checkpoint"] / "checkpoints" / "step-0000001" / "shard.pt").is_file()
        assert (given["tokenizer"] / "tokenizer.json").is_file() and given["config"].is_file()
        given["out"].mkdir(parents=True, exist_ok=True)
        (given["out"] / "model.safetensors").write_text("weights")
        if fails:
            raise LaunchError("steps.convert exited with code 1")
        record = ConversionRecord(
            checkpoint="step-0000001", step=1, init_sha256="0" * 64, zero_stage=2, trained_world_size=1, dtype="fp32",
            tensors=1, parameters=1, written_bytes=4, shards=1, all_tensors_checked=True, max_logit_difference=0.0,
            tolerance=1e-4, logits_match=True, files=["model.safetensors"], tensor_checks=[],
        )  # fmt: skip
        (given["out"] / "conversion.json").write_text(record.model_dump_json())

    _fake_entry(monkeypatch, temp_root, child)
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer}
    if fails:
        with pytest.raises(LaunchError):
            run_stage(CONVERT, TuneConfig(), _place(s3_storage), inputs)
    else:
        result = run_stage(CONVERT, TuneConfig(), _place(s3_storage), inputs)
        assert s3_storage.get_text("convert/model/model.safetensors") == "weights" and result.conversion.step == 1
    assert _left(temp_root) == []


def test_prepare_removes_its_base_model_copy_when_the_child_fails(
    s3_storage: Storage, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def child(given: dict[str, Path]) -> None:
        (given["out"] / "base_model").mkdir(parents=True)
        (given["out"] / "base_model" / "model.safetensors").write_text("weights")
        (given["out"] / "half-written.arrow").write_text("...")
        raise LaunchError("steps.prepare exited with code 1")

    _fake_entry(monkeypatch, temp_root, child)
    with pytest.raises(LaunchError):
        run_stage(PREPARE, TuneConfig(), _place(s3_storage))
    assert _left(temp_root) == [] and s3_storage.list("prepare") == []


def test_evaluate_removes_its_downloads_when_the_child_fails(
    s3_storage: Storage, tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _published(s3_storage, tmp_path, "model", {"model.safetensors": "w"})
    dataset = _published(s3_storage, tmp_path, "dataset", {"train/data.arrow": "d"})
    base = _published(s3_storage, tmp_path, "prepare/base_model", {"config.json": "{}"})

    def child(given: dict[str, Path]) -> None:
        assert (given["model"] / "model.safetensors").is_file() and (given["dataset"] / "train/data.arrow").is_file()
        assert (given["base-model"] / "config.json").is_file()
        raise LaunchError("steps.evaluate under torchrun exited with code 1")

    _fake_entry(monkeypatch, temp_root, child)
    with pytest.raises(LaunchError):
        run_stage(EVALUATE, TuneConfig(), _place(s3_storage), {"model": model, "dataset": dataset, "base_model": base})
    assert _left(temp_root) == []


@pytest.mark.parametrize("fails", [False, True], ids=["success", "failure"])
def test_train_removes_its_downloads_staging_and_workdir(
    s3_storage: Storage, tmp_path: Path, temp_root: Path, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    dataset = _published(s3_storage, tmp_path, "dataset", {"train/data.arrow": "d"})
    tokenizer = _published(s3_storage, tmp_path, "tokenizer", {"tokenizer.json": "{}"})
    base = _published(s3_storage, tmp_path, "prepare/base_model", {"config.json": "{}"})

    def child(given: dict[str, Path]) -> None:
        assert (given["base-model"] / "config.json").is_file()
        assert (given["dataset"] / "train/data.arrow").is_file() and (given["tokenizer"] / "tokenizer.json").is_file()
        (given["out"] / TRAIN_SUMMARY_FILE).write_text(TrainSummary(**SUMMARY).model_dump_json())
        (given["checkpoint-staging"] / "checkpoints").mkdir(parents=True)
        if fails:
            raise LaunchError("steps.train under torchrun exited with code 1")

    _fake_entry(monkeypatch, temp_root, child)
    inputs = {"dataset": dataset, "tokenizer": tokenizer, "base_model": base}
    if fails:
        with pytest.raises(LaunchError):
            run_stage(TRAIN, TuneConfig(), _place(s3_storage), inputs)
    else:
        result = run_stage(TRAIN, TuneConfig(), _place(s3_storage), inputs)
        assert result.train_summary.steps == SUMMARY["steps"] and s3_storage.get_text(f"train/{TRAIN_SUMMARY_FILE}")
    assert _left(temp_root) == []
