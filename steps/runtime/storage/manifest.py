"""What a stored folder promises: each file's size and SHA-256, and the reference that travels between steps.

Every published folder gets a `_manifest.json`, written last; a folder without
one is incomplete and never read. A `StoredDir` is the folder's URI plus the
hash of its manifest, so a reference can only be satisfied by the very files
it was made for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
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


def checked_name(name: str, where: str) -> str:
    """`name` when it stays inside the folder it is relative to; else a StorageError naming it.

    Stored names come from listings, manifests and checkpoint records that someone else
    wrote; one that climbs out (`../../home/u/.bashrc`), or an object key with `//` or a
    leading `/` that a local path join turns into an absolute path, would be written or
    read outside the folder.
    """
    if name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        raise StorageError(f"{where}: refusing the stored name {name!r}, which leads outside its folder")
    return name


def local_target(folder: Path, name: str) -> Path:
    """Where the stored file `name` goes under the local `folder`, refused when it would land outside."""
    return folder / PurePosixPath(checked_name(name, str(folder)))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(path: Path, relative: str) -> dict[str, Any]:
    """The manifest entry of one file."""
    return {"path": relative, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def text_entry(relative: str, text: str) -> dict[str, Any]:
    """The manifest entry of a file whose text is `text`."""
    data = text.encode()
    return {"path": relative, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def build_manifest(folder: Path, elsewhere: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """Per-file sizes and hashes of a folder, in a stable order.

    `elsewhere`: entries of files that belong to the folder but were stored by other
    processes (other machines' checkpoint shards); an entry for a path that is also
    here replaces the local one's (they describe the same bytes).
    """
    entries = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative != MANIFEST:
            entries[relative] = file_entry(path, relative)
    entries.update({entry["path"]: entry for entry in elsewhere})
    return {"files": [entries[path] for path in sorted(entries)]}


def manifest_sha256(manifest: dict[str, Any]) -> str:
    canonical = json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def stored_dir(uri: str, manifest: dict[str, Any]) -> StoredDir:
    return StoredDir(
        uri=uri,
        sha256=manifest_sha256(manifest),
        files=len(manifest["files"]),
        bytes=sum(e["bytes"] for e in manifest["files"]),
    )


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs between two manifests, as `missing p`, `changed p`, `unexpected p`."""
    want = {e["path"]: e["sha256"] for e in expected["files"]}
    have = {e["path"]: e["sha256"] for e in actual["files"]}
    missing = [f"missing {p}" for p in want if p not in have]
    extra = [f"unexpected {p}" for p in have if p not in want]
    changed = [f"changed {p}" for p in want if p in have and want[p] != have[p]]
    return missing + changed + extra
