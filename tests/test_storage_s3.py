"""Run storage on S3, against a real S3 API server (moto) on 127.0.0.1 (the `s3_bucket` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.storage import MANIFEST, RunStorage, StorageError, StoredDir, download_prefix, fetch


def test_publish_and_fetch_through_s3(s3_bucket, tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "nested").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"w" * 4096)
    (src / "nested" / "config.json").write_text("{}")
    storage = RunStorage("s3://runs/TuneFlow/1/files")
    ref = storage.publish(src, "convert/model")
    assert ref.uri == "s3://runs/TuneFlow/1/files/convert/model" and ref.files == 2
    keys = {o["Key"] for o in s3_bucket.list_objects_v2(Bucket="runs")["Contents"]}
    assert f"TuneFlow/1/files/convert/model/{MANIFEST}" in keys
    local = fetch(StoredDir.from_dict(ref.to_dict()), tmp_path / "cache")
    assert (local / "weights.bin").read_bytes() == b"w" * 4096


def test_s3_folder_without_manifest_or_with_other_bytes_is_refused(s3_bucket, tmp_path: Path) -> None:
    src = tmp_path / "d"
    src.mkdir()
    (src / "a.txt").write_text("original")
    ref = RunStorage("s3://runs/x").publish(src, "d")
    s3_bucket.put_object(Bucket="runs", Key="x/d/a.txt", Body=b"altered")
    with pytest.raises(StorageError, match="do not match the manifest"):
        fetch(ref, tmp_path / "c1")
    s3_bucket.delete_object(Bucket="runs", Key=f"x/d/{MANIFEST}")
    with pytest.raises(StorageError, match="incomplete"):
        fetch(ref, tmp_path / "c2")


def test_download_prefix_keeps_relative_paths(s3_bucket, tmp_path: Path) -> None:
    s3_bucket.put_object(Bucket="runs", Key="corpus/reports/a.md", Body=b"# A")
    s3_bucket.put_object(Bucket="runs", Key="corpus/b.txt", Body=b"B")
    target = download_prefix("s3://runs/corpus/", tmp_path / "corpus")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "b.txt",
        "reports/a.md",
    ]
    with pytest.raises(StorageError, match="holds no objects"):
        download_prefix("s3://runs/nothing-here/", tmp_path / "none")
