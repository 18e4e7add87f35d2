"""Files of a run (datasets, tokenizer, checkpoints, models) in the run's own storage.

The storage root is a local folder (under Metaflow's local datastore by default)
or an s3:// prefix (under the S3 datastore root). Every published folder gets a
`_manifest.json`, written last, with each file's SHA-256; a folder without one
is incomplete and is never read. What travels between steps is a `StoredDir`:
the folder's URI plus the hash of its manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST = "_manifest.json"
_CHUNK = 1 << 20


class StorageError(RuntimeError):
    """A stored folder that is missing, incomplete or altered."""


@dataclass(frozen=True)
class StoredDir:
    """A published folder: where it is and what it must hash to."""

    uri: str
    sha256: str
    files: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredDir:
        return cls(**data)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(folder: Path) -> dict[str, Any]:
    """Per-file sizes and hashes of a folder, in a stable order."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST:
            continue
        entries.append({"path": rel, "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    return {"files": entries}


def manifest_sha256(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stored(uri: str, manifest: dict[str, Any]) -> StoredDir:
    return StoredDir(
        uri=uri,
        sha256=manifest_sha256(manifest),
        files=len(manifest["files"]),
        bytes=sum(e["bytes"] for e in manifest["files"]),
    )


def _s3_client():
    import boto3  # only S3 runs need it

    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key.strip("/")


class RunStorage:
    """Publish and fetch folders under one root: a local path or an s3:// prefix."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.is_s3 = self.root.startswith("s3://")

    def uri(self, name: str) -> str:
        return f"{self.root}/{name.strip('/')}"

    def workdir(self, name: str) -> Path:
        """A local folder to write `<name>` into: the final place itself when storage is local.

        Processes on one machine (torchrun ranks, simulated nodes) then write their
        shards straight into the run's storage; `seal` makes the folder readable.
        """
        if self.is_s3:
            return Path(tempfile.mkdtemp(prefix=f"tune-{name.replace('/', '-')}-"))
        path = Path(self.uri(name))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def seal(self, local_dir: str | Path, name: str, stored: list[dict[str, Any]] = ()) -> StoredDir:
        """Finish a `workdir`: write its manifest in place (local) or upload it (S3).

        `stored` lists manifest entries (path relative to `name`, bytes, sha256) of files
        other processes already put under `<root>/<name>` (other nodes' checkpoint shards);
        they join the manifest without passing through this machine.
        """
        local_dir = Path(local_dir)
        if self.is_s3:
            manifest = build_manifest(local_dir)
            manifest["files"] = sorted(manifest["files"] + list(stored), key=lambda e: e["path"])
            self._upload(local_dir, self.uri(name), manifest)
            return _stored(self.uri(name), manifest)
        if local_dir.resolve() != Path(self.uri(name)).resolve():
            return self.publish(local_dir, name)
        manifest = build_manifest(local_dir)
        if not manifest["files"]:
            raise StorageError(f"cannot seal {local_dir}: the folder is empty")
        (local_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
        return _stored(str(local_dir), manifest)

    def publish(self, local_dir: str | Path, name: str) -> StoredDir:
        """Copy a finished local folder to `<root>/<name>`; readers see all of it or nothing."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise StorageError(f"cannot publish {local_dir}: not a folder")
        manifest = build_manifest(local_dir)
        if not manifest["files"]:
            raise StorageError(f"cannot publish {local_dir}: the folder is empty")
        dest = self.uri(name)
        if self.is_s3:
            self._upload(local_dir, dest, manifest)
        else:
            self._copy_local(local_dir, Path(dest), manifest)
        return _stored(dest, manifest)

    def _copy_local(self, src: Path, dest: Path, manifest: dict[str, Any]) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            shutil.copytree(src, staging, dirs_exist_ok=True)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
            if dest.exists():  # a retried task publishes again over its own earlier attempt
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _upload(self, src: Path, dest: str, manifest: dict[str, Any]) -> None:
        client = _s3_client()
        bucket, prefix = _split_s3(dest)
        # The manifest goes last, so a reader never takes a half-uploaded folder for a whole one.
        client.delete_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}")
        for entry in manifest["files"]:
            if (src / entry["path"]).is_file():  # entries stored by others are already there
                client.upload_file(str(src / entry["path"]), bucket, f"{prefix}/{entry['path']}")
        client.put_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}", Body=json.dumps(manifest).encode())


def fetch(stored: StoredDir, cache_dir: str | Path | None = None, verify: bool = True) -> Path:
    """A local folder with the stored files: the folder itself when local, a download from S3."""
    if stored.uri.startswith("s3://"):
        return _download(stored, Path(cache_dir or tempfile.mkdtemp(prefix="tune-fetch-")))
    folder = Path(stored.uri)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise StorageError(f"{folder} is incomplete (no {MANIFEST}); publish it again")
    manifest = json.loads(manifest_path.read_text())
    if manifest_sha256(manifest) != stored.sha256:
        raise StorageError(f"{folder}: manifest hash differs from the reference {stored.sha256[:12]}")
    if verify:
        actual = build_manifest(folder)
        if actual != manifest:
            changed = _differences(manifest, actual)
            raise StorageError(f"{folder}: files differ from the manifest: {', '.join(changed[:5])}")
    return folder


def _download(stored: StoredDir, target: Path) -> Path:
    client = _s3_client()
    bucket, prefix = _split_s3(stored.uri)
    try:
        body = client.get_object(Bucket=bucket, Key=f"{prefix}/{MANIFEST}")["Body"].read()
    except client.exceptions.NoSuchKey:
        raise StorageError(f"{stored.uri} is incomplete (no {MANIFEST}); publish it again") from None
    manifest = json.loads(body)
    if manifest_sha256(manifest) != stored.sha256:
        raise StorageError(f"{stored.uri}: manifest hash differs from the reference {stored.sha256[:12]}")
    for entry in manifest["files"]:
        path = target / entry["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, f"{prefix}/{entry['path']}", str(path))
        if file_sha256(path) != entry["sha256"]:
            raise StorageError(f"{stored.uri}/{entry['path']}: downloaded bytes do not match the manifest")
    (target / MANIFEST).write_bytes(body)
    return target


def _differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    want = {e["path"]: e["sha256"] for e in expected["files"]}
    have = {e["path"]: e["sha256"] for e in actual["files"]}
    missing = [f"missing {p}" for p in want if p not in have]
    extra = [f"unexpected {p}" for p in have if p not in want]
    changed = [f"changed {p}" for p in want if p in have and want[p] != have[p]]
    return missing + changed + extra


def download_prefix(uri: str, target: Path) -> Path:
    """Every object under an s3:// prefix, downloaded into `target` with its relative path."""
    client = _s3_client()
    bucket, prefix = _split_s3(uri)
    found = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(prefix) :].lstrip("/")
            if not relative or relative.endswith("/"):
                continue
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(path))
            found += 1
    if not found:
        raise StorageError(f"{uri} holds no objects; check the bucket and prefix")
    return target


# Single files under a URI (a local path or s3://), for writers that are not one
# process publishing one folder: every rank's checkpoint shards, every node's log.


def put_file(local: Path, uri: str) -> None:
    if uri.startswith("s3://"):
        bucket, key = _split_s3(uri)
        _s3_client().upload_file(str(local), bucket, key)
    elif Path(uri).resolve() != Path(local).resolve():
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, uri)


def put_text(uri: str, text: str) -> None:
    if uri.startswith("s3://"):
        bucket, key = _split_s3(uri)
        _s3_client().put_object(Bucket=bucket, Key=key, Body=text.encode())
    else:
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        staging.write_text(text)
        os.replace(staging, path)  # readers see the old text or the new, never a part


def read_text(uri: str) -> str | None:
    """The file's text, or None when it does not exist."""
    if uri.startswith("s3://"):
        client = _s3_client()
        bucket, key = _split_s3(uri)
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        except client.exceptions.NoSuchKey:
            return None
    path = Path(uri)
    return path.read_text() if path.is_file() else None


def list_files(uri: str) -> list[str]:
    """Paths of every file under a folder URI, relative to it; empty when there is none."""
    if uri.startswith("s3://"):
        bucket, prefix = _split_s3(uri)
        found = []
        for page in _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
            found += [obj["Key"][len(prefix) + 1 :] for obj in page.get("Contents", [])]
        return sorted(found)
    root = Path(uri)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def get_file(uri: str, local: Path) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith("s3://"):
        bucket, key = _split_s3(uri)
        _s3_client().download_file(bucket, key, str(local))
    elif Path(uri).resolve() != local.resolve():
        shutil.copyfile(uri, local)


def delete_tree(uri: str) -> None:
    if uri.startswith("s3://"):
        client = _s3_client()
        bucket, prefix = _split_s3(uri)
        for relative in list_files(uri):
            client.delete_object(Bucket=bucket, Key=f"{prefix}/{relative}")
    else:
        shutil.rmtree(uri, ignore_errors=True)
