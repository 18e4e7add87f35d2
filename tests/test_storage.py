from __future__ import annotations

import json
from pathlib import Path

import pytest

from steps.storage import MANIFEST, RunStorage, StorageError, StoredDir, fetch


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"\x00\x01" * 1000)
    (src / "sub" / "b.txt").write_text("hello")
    return src


def test_publish_then_fetch_verifies(tmp_path: Path) -> None:
    storage = RunStorage(str(tmp_path / "root"))
    ref = storage.publish(_folder(tmp_path), "prepare/dataset")
    assert ref.files == 2 and ref.bytes == 2005
    folder = fetch(StoredDir.from_dict(ref.to_dict()))
    assert (folder / "sub" / "b.txt").read_text() == "hello"
    assert json.loads((folder / MANIFEST).read_text())["files"][0]["path"] == "a.bin"


def test_fetch_detects_altered_and_missing_files(tmp_path: Path) -> None:
    storage = RunStorage(str(tmp_path / "root"))
    ref = storage.publish(_folder(tmp_path), "x")
    Path(ref.uri, "sub", "b.txt").write_text("tampered")
    with pytest.raises(StorageError, match="changed sub/b.txt"):
        fetch(ref)
    Path(ref.uri, "sub", "b.txt").unlink()
    with pytest.raises(StorageError, match="missing sub/b.txt"):
        fetch(ref)


def test_folder_without_manifest_is_never_read(tmp_path: Path) -> None:
    storage = RunStorage(str(tmp_path / "root"))
    ref = storage.publish(_folder(tmp_path), "x")
    Path(ref.uri, MANIFEST).unlink()
    with pytest.raises(StorageError, match="incomplete"):
        fetch(ref)


def test_reference_hash_must_match(tmp_path: Path) -> None:
    storage = RunStorage(str(tmp_path / "root"))
    ref = storage.publish(_folder(tmp_path), "x")
    forged = StoredDir(ref.uri, "0" * 64, ref.files, ref.bytes)
    with pytest.raises(StorageError, match="manifest hash differs"):
        fetch(forged)


def test_republish_replaces_and_hash_follows_content(tmp_path: Path) -> None:
    storage = RunStorage(str(tmp_path / "root"))
    src = _folder(tmp_path)
    first = storage.publish(src, "x")
    assert storage.publish(src, "x").sha256 == first.sha256
    (src / "a.bin").write_bytes(b"new")
    second = storage.publish(src, "x")
    assert second.sha256 != first.sha256
    assert not [p for p in Path(first.uri).parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_workdir_is_sealed_in_place(tmp_path: Path) -> None:
    storage = RunStorage(str(tmp_path / "root"))
    work = storage.workdir("train")
    (work / "shard-0.pt").write_bytes(b"abc")
    ref = storage.seal(work, "train")
    assert Path(ref.uri) == work and fetch(ref) == work


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="empty"):
        RunStorage(str(tmp_path / "root")).publish(tmp_path / "empty", "x")
