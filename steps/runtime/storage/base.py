"""The one storage interface: a root (a local folder or an object-store prefix) and files under it by name.

Implementations provide the primitives (list, get/put text and files, delete,
publish a folder); everything built on them is written once, here. No other
module asks what kind of storage it has: where it matters whether processes of
this machine can write into the root directly (DeepSpeed writing checkpoint
shards in place), `local_path` says so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steps.runtime.storage.manifest import (
    MANIFEST,
    StorageError,
    StoredDir,
    build_manifest,
    checked_name,
    differences,
    file_sha256,
    local_target,
    manifest_sha256,
    stored_dir,
)


class Storage(ABC):
    """Files under one root URI, addressed by names relative to it (`train/checkpoints/step-0000040`)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    def uri(self, name: str = "") -> str:
        name = self.inside(name)
        return f"{self.root}/{name}" if name else self.root

    def inside(self, name: str) -> str:
        """`name` ("" for the root itself); a StorageError when it would leave the root.

        The rule of `checked_name`, which stored names from manifests and listings also pass:
        no `..` or `.`, no leading `/`, no empty segment (`a//b`), so a name means the same
        file on every kind of storage.
        """
        return checked_name(name, self.root) if name else name

    def child(self, name: str) -> Storage:
        """The same kind of storage, rooted at `name` below this root."""
        return type(self)(self.uri(name))

    @property
    @abstractmethod
    def local_path(self) -> Path | None:
        """The root as a folder of this machine, when processes here read and write it in place; else None."""

    @abstractmethod
    def list(self, name: str = "") -> list[str]:
        """Paths of every file under `name`, relative to it, sorted; empty when there is none."""

    @abstractmethod
    def get_text(self, name: str) -> str | None:
        """The file's text, or None when it does not exist."""

    @abstractmethod
    def put_text(self, name: str, text: str) -> None:
        """Write a file whole: readers see the old text or the new, never a part."""

    @abstractmethod
    def put_file(self, local: Path, name: str) -> None:
        """Store a local file as `name` (nothing to do when it already is that file)."""

    @abstractmethod
    def get_file(self, name: str, local: Path) -> None:
        """Copy the stored file `name` to the local path."""

    @abstractmethod
    def delete(self, name: str = "") -> None:
        """Remove `name` and everything under it."""

    @abstractmethod
    def _store_folder(self, local_dir: Path, name: str, manifest: dict[str, Any]) -> None:
        """Put a local folder's files and then its manifest under `name`, so readers see all or nothing."""

    def publish(self, local_dir: str | Path, name: str, elsewhere: Iterable[dict[str, Any]] = ()) -> StoredDir:
        """Store a finished local folder as `name` with its manifest written last.

        `elsewhere`: manifest entries (paths relative to `name`) of files other processes
        already stored under `name` (other machines' checkpoint shards); they join the
        manifest without passing through this machine.
        """
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise StorageError(f"cannot publish {local_dir}: not a folder")
        manifest = build_manifest(local_dir, elsewhere)
        if not manifest["files"]:
            raise StorageError(f"cannot publish {local_dir}: the folder is empty")
        self._store_folder(local_dir, name, manifest)
        return stored_dir(self.uri(name), manifest)

    def workdir(self, name: str, under: Path | None = None) -> Path:
        """A local folder to write `name` into: the final place itself when this machine holds the storage.

        Processes on one machine (torchrun ranks, simulated nodes) then write their
        files straight into the run's storage; `seal` makes the folder readable.
        Otherwise a new temporary folder, inside `under` when given (the stage's own).
        """
        if self.local_path is None:
            return Path(tempfile.mkdtemp(prefix=f"tune-{name.replace('/', '-')}-", dir=under))
        path = self.local_path / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def seal(self, local_dir: str | Path, name: str, elsewhere: Iterable[dict[str, Any]] = ()) -> StoredDir:
        """Finish a `workdir`: write its manifest in place when it is the stored folder, else publish it."""
        local_dir = Path(local_dir)
        if self.local_path is None or local_dir.resolve() != (self.local_path / name).resolve():
            return self.publish(local_dir, name, elsewhere)
        manifest = build_manifest(local_dir, elsewhere)
        if not manifest["files"]:
            raise StorageError(f"cannot seal {local_dir}: the folder is empty")
        self.put_text(f"{name}/{MANIFEST}", json.dumps(manifest, indent=1))
        return stored_dir(self.uri(name), manifest)

    def fetch(self, sha256: str, target: Path | None = None, verify: bool = True) -> Path:
        """A local folder with this root's published files, checked against the manifest hash `sha256`.

        Where the root is on this machine, that folder itself (every file re-hashed when
        `verify`); otherwise a download into `target`, each file checked as it arrives.
        """
        text = self.get_text(MANIFEST)
        if text is None:
            raise StorageError(f"{self.root} is incomplete (no {MANIFEST}); publish it again")
        manifest = json.loads(text)
        if manifest_sha256(manifest) != sha256:
            raise StorageError(f"{self.root}: manifest hash differs from the reference {sha256[:12]}")
        if self.local_path is not None:
            if verify:
                changed = differences(manifest, build_manifest(self.local_path))
                if changed:
                    raise StorageError(f"{self.root}: files differ from the manifest: {', '.join(changed[:5])}")
            return self.local_path
        for entry in manifest["files"]:  # every name checked before anything is written
            checked_name(entry["path"], self.uri(MANIFEST))
        with _owned_folder(target, "tune-fetch-") as folder:
            for entry in manifest["files"]:
                path = local_target(folder, entry["path"])
                self.get_file(entry["path"], path)
                if file_sha256(path) != entry["sha256"]:
                    raise StorageError(f"{self.uri(entry['path'])}: downloaded bytes do not match the manifest")
            (folder / MANIFEST).write_text(text)
        return folder

    def materialize(self, target: Path | None = None, prefix: str = "tune-download-") -> Path:
        """A local folder with every file under the root, manifest or not: the root itself, or a download.

        Names are kept inside the root's prefix (`corpus/` does not list `corpus-private/`) and
        inside `target` (a key with `..` is refused before anything is downloaded).
        """
        if self.local_path is not None:
            if not self.local_path.exists():
                raise StorageError(f"{self.root} does not exist")
            return self.local_path
        names = [checked_name(name, self.root) for name in self.list()]
        if not names:
            raise StorageError(f"{self.root} holds no objects; check the bucket and prefix")
        with _owned_folder(target, prefix) as folder:
            for name in names:
                self.get_file(name, local_target(folder, name))
        return folder


@contextmanager
def _owned_folder(target: Path | None, prefix: str) -> Iterator[Path]:
    """`target`, or a new temporary folder that is removed again if the download into it fails."""
    folder = target or Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    except BaseException:
        if target is None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
