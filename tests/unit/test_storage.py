"""The storage interface, the same tests against a local folder and S3 (the moto server)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest

from steps.runtime.storage import MANIFEST, Storage, StorageError, StoredDir, fetch, open_storage
from steps.runtime.storage.local import LocalStorage
from steps.runtime.storage.manifest import checked_name, stored_dir
from steps.runtime.storage.s3 import S3Storage


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path: Path) -> Storage:
    """An empty storage root of each kind."""
    if request.param == "local":
        return open_storage(str(tmp_path / "root"))
    request.getfixturevalue("aws_env")
    bucket = f"storage-{request.node.name.replace('_', '-').replace('[', '-').rstrip(']')}"[:63]
    boto3.client("s3").create_bucket(Bucket=bucket)
    return open_storage(f"s3://{bucket}/TuneFlow/1/files")


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"\x00\x01" * 1000)
    (src / "sub" / "b.txt").write_text("hello")
    return src


def test_the_uri_picks_the_kind(tmp_path: Path) -> None:
    assert isinstance(open_storage("s3://bucket/prefix/"), S3Storage)
    assert open_storage("s3://bucket/prefix/").uri("a/b") == "s3://bucket/prefix/a/b"
    local = open_storage(str(tmp_path))
    assert isinstance(local, LocalStorage) and local.local_path == tmp_path
    assert open_storage("~/corpus").local_path == Path.home() / "corpus"
    assert open_storage("s3://bucket/p").local_path is None


def test_publish_then_fetch_verifies(storage: Storage, tmp_path: Path) -> None:
    ref = storage.publish(_folder(tmp_path), "prepare/dataset")
    assert ref.uri == storage.uri("prepare/dataset") and ref.files == 2 and ref.bytes == 2005
    folder = fetch(StoredDir.from_dict(ref.to_dict()), tmp_path / "fetched")
    assert (folder / "sub" / "b.txt").read_text() == "hello"
    assert json.loads((folder / MANIFEST).read_text())["files"][0]["path"] == "a.bin"
    assert storage.list("prepare/dataset") == sorted([MANIFEST, "a.bin", "sub/b.txt"])


def test_fetch_names_altered_and_missing_files(storage: Storage, tmp_path: Path) -> None:
    ref = storage.publish(_folder(tmp_path), "x")
    storage.put_text("x/sub/b.txt", "tampered")
    with pytest.raises(StorageError, match="sub/b.txt"):
        fetch(ref, tmp_path / "c1")
    storage.delete("x/sub/b.txt")
    with pytest.raises(StorageError, match="sub/b.txt"):
        fetch(ref, tmp_path / "c2")


def test_folder_without_manifest_is_never_read(storage: Storage, tmp_path: Path) -> None:
    ref = storage.publish(_folder(tmp_path), "x")
    storage.delete(f"x/{MANIFEST}")
    with pytest.raises(StorageError, match="incomplete"):
        fetch(ref, tmp_path / "c")


def test_reference_hash_must_match(storage: Storage, tmp_path: Path) -> None:
    ref = storage.publish(_folder(tmp_path), "x")
    forged = StoredDir(ref.uri, "0" * 64, ref.files, ref.bytes)
    with pytest.raises(StorageError, match="manifest hash differs"):
        fetch(forged, tmp_path / "c")


def test_republish_replaces_and_hash_follows_content(storage: Storage, tmp_path: Path) -> None:
    src = _folder(tmp_path)
    first = storage.publish(src, "x")
    assert storage.publish(src, "x").sha256 == first.sha256
    (src / "a.bin").write_bytes(b"new")
    second = storage.publish(src, "x")
    assert second.sha256 != first.sha256
    assert (fetch(second, tmp_path / "c") / "a.bin").read_bytes() == b"new"


def test_local_publish_leaves_no_staging_folder(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "root"))
    storage.publish(_folder(tmp_path), "x")
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["x"]


def test_a_workdir_is_sealed_into_the_storage(storage: Storage, tmp_path: Path) -> None:
    work = storage.workdir("train", under=tmp_path)  # as the train stage passes its scratch
    (work / "shard-0.pt").write_bytes(b"abc")
    ref = storage.seal(work, "train")
    assert ref.uri == storage.uri("train") and (fetch(ref, tmp_path / "c") / "shard-0.pt").read_bytes() == b"abc"
    if storage.local_path is not None:  # written in place: nothing was copied
        assert work == storage.local_path / "train"


def test_sealing_adds_files_stored_by_other_processes(storage: Storage, tmp_path: Path) -> None:
    work = storage.workdir("train", under=tmp_path)
    (work / "summary.json").write_text("{}")
    storage.put_text("train/checkpoints/step-1/shard-1.pt", "other node")
    other = {"path": "checkpoints/step-1/shard-1.pt", "bytes": 10, "sha256": _sha("other node")}
    ref = storage.seal(work, "train", elsewhere=[other])
    folder = fetch(ref, tmp_path / "c")
    assert ref.files == 2 and (folder / "checkpoints" / "step-1" / "shard-1.pt").read_text() == "other node"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_empty_folder_is_refused(storage: Storage, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageError, match="empty"):
        storage.publish(tmp_path / "empty", "x")


def test_text_files_listing_and_delete(storage: Storage, tmp_path: Path) -> None:
    assert storage.get_text("logs/node-1.exit") is None and storage.list("logs") == []
    storage.put_text("logs/node-1.exit", "0")
    (tmp_path / "node-1.log").write_text("hello")
    storage.put_file(tmp_path / "node-1.log", "logs/node-1.log")
    logs = storage.child("logs")
    assert logs.get_text("node-1.exit") == "0" and logs.list() == ["node-1.exit", "node-1.log"]
    logs.get_file("node-1.log", tmp_path / "copy.log")
    assert (tmp_path / "copy.log").read_text() == "hello"
    storage.delete("logs")
    assert storage.list("logs") == [] and logs.get_text("node-1.exit") is None


def test_a_prefix_lists_only_its_own_folder(storage: Storage) -> None:
    storage.put_text("corpus/reports/a.md", "# A")
    storage.put_text("corpus/b.txt", "B")
    storage.put_text("corpus-private/secret.txt", "not part of corpus/")
    assert storage.list("corpus") == ["b.txt", "reports/a.md"]


def test_materialize_gives_a_local_folder_with_relative_paths(storage: Storage, tmp_path: Path) -> None:
    storage.put_text("corpus/reports/a.md", "# A")
    storage.put_text("corpus/b.txt", "B")
    target = storage.child("corpus").materialize(tmp_path / "corpus")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "b.txt",
        "reports/a.md",
    ]
    if storage.local_path is not None:
        assert target == storage.local_path / "corpus"  # nothing copied
    with pytest.raises(StorageError):
        storage.child("nothing-here").materialize(tmp_path / "none")


def test_a_prefix_uri_downloads_only_its_own_folder(storage: Storage, tmp_path: Path) -> None:
    # `s3://b/.../corpus/` must not also read `corpus-private/…`, however the URI is written.
    storage.put_text("corpus/b.txt", "B")
    storage.put_text("corpus-private/secret.txt", "not part of corpus/")
    for index, uri in enumerate((storage.uri("corpus"), storage.uri("corpus") + "/")):
        target = open_storage(uri).materialize(tmp_path / f"download-{index}")
        assert sorted(p.name for p in target.rglob("*") if p.is_file()) == ["b.txt"]


@pytest.mark.parametrize(
    "name", ["../outside.txt", "corpus/../../outside.txt", "a/../../outside.txt"], ids=["up", "down-up", "a-up"]
)
def test_names_that_climb_out_of_the_root_are_refused(storage: Storage, tmp_path: Path, name: str) -> None:
    (tmp_path / "local.txt").write_text("x")
    for attempt in (
        lambda: storage.put_text(name, "x"),
        lambda: storage.put_file(tmp_path / "local.txt", name),
        lambda: storage.get_file(name, tmp_path / "copy.txt"),
        lambda: storage.get_text(name),
    ):
        with pytest.raises(StorageError, match="leads outside"):
            attempt()
    assert not (tmp_path / "outside.txt").exists() and not (tmp_path / "root" / "outside.txt").exists()


@pytest.mark.parametrize("name", ["/outside.txt", "a//b.txt", "a/./b.txt", "corpus/"])
def test_a_name_means_the_same_file_everywhere_or_is_refused(storage: Storage, tmp_path: Path, name: str) -> None:
    # The names a stored manifest may not hold (`checked_name`) are refused when code asks for them too:
    # before, `/outside.txt` and `corpus/` were stripped to another name, and `a//b.txt` meant two keys on S3.
    with pytest.raises(StorageError, match="leads outside"):
        checked_name(name, "manifest")
    (tmp_path / "local.txt").write_text("x")
    for attempt in (
        lambda: storage.uri(name),
        lambda: storage.put_text(name, "x"),
        lambda: storage.put_file(tmp_path / "local.txt", name),
        lambda: storage.get_text(name),
        lambda: storage.child(name),
    ):
        with pytest.raises(StorageError, match="leads outside"):
            attempt()
    assert storage.list() == []
    assert storage.uri("") == storage.root and storage.uri("a/b.txt") == storage.root + "/a/b.txt"


@pytest.mark.parametrize(
    "key", ["../../escaped.txt", "sub/../../../escaped.txt", "/escaped.txt"], ids=["up", "down-up", "absolute"]
)
def test_an_object_key_that_escapes_the_download_folder_is_refused(aws_env, tmp_path: Path, key: str) -> None:
    # Object keys are plain strings: `corpus/../../x` and `corpus//x` exist in S3 and must not
    # become `<target>/../../x` or `/x` on this machine.
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="escape")
    s3.put_object(Bucket="escape", Key="corpus/ok.txt", Body=b"ok")
    s3.put_object(Bucket="escape", Key=f"corpus/{key}", Body=b"planted")
    target = tmp_path / "deep" / "down" / "corpus"
    with pytest.raises(StorageError, match="leads outside"):
        open_storage("s3://escape/corpus/").materialize(target)
    planted = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert planted == [], planted  # refused before anything was downloaded


def test_a_manifest_entry_that_escapes_the_fetch_folder_is_refused(aws_env, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="escape-manifest")
    storage = open_storage("s3://escape-manifest/run/files")
    entry = {"path": "../escaped.txt", "bytes": 7, "sha256": _sha("planted")}
    s3.put_object(Bucket="escape-manifest", Key="run/files/escaped.txt", Body=b"planted")
    manifest = {"files": [entry]}
    storage.put_text(f"model/{MANIFEST}", json.dumps(manifest))
    ref = stored_dir(storage.uri("model"), manifest)
    with pytest.raises(StorageError, match="leads outside"):
        fetch(ref, tmp_path / "fetched" / "model")
    assert not (tmp_path / "fetched").exists()
