"""Storage in a local folder: the default, under Metaflow's local datastore."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from steps.runtime.storage.base import Storage
from steps.runtime.storage.manifest import MANIFEST


class LocalStorage(Storage):
    def __init__(self, root: str) -> None:
        super().__init__(os.path.expanduser(root))  # `~/corpus` as a shell would read it

    @property
    def local_path(self) -> Path:
        return Path(self.root)

    def _path(self, name: str) -> Path:
        return Path(self.uri(name))

    def list(self, name: str = "") -> list[str]:
        root = self._path(name)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []

    def get_text(self, name: str) -> str | None:
        path = self._path(name)
        return path.read_text() if path.is_file() else None

    def put_text(self, name: str, text: str) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.partial")
        staging.write_text(text)
        os.replace(staging, path)

    def put_file(self, local: Path, name: str) -> None:
        path = self._path(name)
        if path.resolve() != Path(local).resolve():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, path)

    def get_file(self, name: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        if self._path(name).resolve() != local.resolve():
            shutil.copyfile(self._path(name), local)

    def delete(self, name: str = "") -> None:
        path = self._path(name)
        if path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)

    def _store_folder(self, local_dir: Path, name: str, manifest: dict[str, Any]) -> None:
        # Copied into a hidden sibling and renamed into place: readers never see a partial folder.
        dest = self._path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            shutil.copytree(local_dir, staging, dirs_exist_ok=True)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
            if dest.exists():  # a retried task publishes again over its own earlier attempt
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
