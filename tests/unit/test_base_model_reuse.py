"""A GGUF base model's dequantized copy in the run's storage is reused only after every file is checked.

Train and evaluate reuse the copy prepare published, also in a resumed run, whose prepare (and so the copy) is
the run it resumes; a changed file, or a copy made from another GGUF file, must stop the stage instead of
training or evaluating a different model. A small stand-in folder plays the dequantized copy (no torch, no
SmolLM2 needed), on a local folder and on S3.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from steps.formats import model_folder
from steps.formats.gguf_source import GGUF_SOURCE_FILE
from steps.runtime.storage import Storage, StorageError, StoredDir, file_sha256, open_storage


@pytest.fixture(params=["local", "s3"])
def run_storage(request, tmp_path: Path) -> Storage:
    if request.param == "local":
        return open_storage(str(tmp_path / "run"))
    request.getfixturevalue("aws_env")
    boto3.client("s3").create_bucket(Bucket="base-model-reuse")
    return open_storage("s3://base-model-reuse/TuneFlow/1/files")


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.Q4_1.gguf"
    path.write_bytes(b"GGUF stand-in")
    return path


def _publish_copy(storage: Storage, tmp_path: Path, made_from: Path) -> StoredDir:
    copy = tmp_path / "dequantized"
    copy.mkdir(exist_ok=True)
    (copy / "config.json").write_text('{"model_type": "llama"}')
    (copy / "model.safetensors").write_bytes(b"\x00" * 4096)
    (copy / GGUF_SOURCE_FILE).write_text(json.dumps({"gguf_file": made_from.name, "sha256": file_sha256(made_from)}))
    return storage.publish(copy, model_folder.BASE_MODEL)


@pytest.fixture
def no_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("dequantized again although the run's storage holds a copy")

    monkeypatch.setattr(model_folder, "run_module", fail)


def test_an_intact_copy_is_reused(run_storage: Storage, gguf: Path, tmp_path: Path, no_conversion) -> None:
    _publish_copy(run_storage, tmp_path, gguf)
    folder = model_folder.resolve_base_model(str(gguf), tmp_path / "stage" / "base-model", run_storage)
    assert (folder / "model.safetensors").read_bytes() == b"\x00" * 4096


def test_a_changed_file_of_the_copy_is_refused(run_storage: Storage, gguf: Path, tmp_path: Path, no_conversion) -> None:
    _publish_copy(run_storage, tmp_path, gguf)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x00" * 4095 + b"\x01")  # one flipped byte, same size
    run_storage.put_file(damaged, f"{model_folder.BASE_MODEL}/model.safetensors")
    with pytest.raises(StorageError, match=r"dequantized copy is damaged: .*model\.safetensors.*; remove .* again"):
        model_folder.resolve_base_model(str(gguf), tmp_path / "stage" / "base-model", run_storage)


def test_a_copy_of_another_gguf_file_is_refused(
    run_storage: Storage, gguf: Path, tmp_path: Path, no_conversion
) -> None:
    other = tmp_path / "other.Q8_0.gguf"
    other.write_bytes(b"another GGUF file")
    _publish_copy(run_storage, tmp_path, other)
    with pytest.raises(StorageError, match=r"made from another GGUF file"):
        model_folder.resolve_base_model(str(gguf), tmp_path / "stage" / "base-model", run_storage)


def test_a_resumed_run_loads_the_copy_of_the_run_it_resumes(
    run_storage: Storage, gguf: Path, tmp_path: Path, no_conversion
) -> None:
    published = _publish_copy(run_storage, tmp_path, gguf)
    assert model_folder.published_copy(str(gguf), run_storage) == published  # what prepare hands on
    assert model_folder.published_copy(str(tmp_path / "hf-folder"), run_storage) is None  # not a GGUF file
    # The resumed run's own files, which hold no copy.
    resumed = open_storage("s3://base-model-reuse/TuneFlow/2/files" if run_storage.local_path is None else tmp_path)
    folder = model_folder.resolve_base_model(str(gguf), tmp_path / "stage" / "base-model", resumed, published)
    assert (folder / "model.safetensors").read_bytes() == b"\x00" * 4096
    assert resumed.get_text(f"{model_folder.BASE_MODEL}/_manifest.json") is None  # no second copy published


def test_a_copy_published_again_since_is_not_the_one_prepare_used(
    run_storage: Storage, gguf: Path, tmp_path: Path, no_conversion
) -> None:
    published = _publish_copy(run_storage, tmp_path, gguf)
    (tmp_path / "dequantized" / "model.safetensors").write_bytes(b"\x01" * 4096)
    run_storage.publish(tmp_path / "dequantized", model_folder.BASE_MODEL)  # e.g. made again by another version
    with pytest.raises(StorageError, match=r"dequantized copy is damaged: .*manifest hash differs"):
        model_folder.resolve_base_model(str(gguf), tmp_path / "stage" / "base-model", None, published)
