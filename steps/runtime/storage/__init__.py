"""Files of a run (datasets, tokenizer, checkpoints, models) in local folders or S3, behind one interface.

`open_storage(uri)` is the one place that tells the kinds apart; everything else
uses the `Storage` it returns. A run's files live under
`<datastore root>/<flow>/<run id>/files` (flows/step_place.py), where every
published folder carries a `_manifest.json`, and what travels between steps is
a `StoredDir` (URI plus manifest hash) that `fetch` turns back into a local folder.
"""

from __future__ import annotations

from pathlib import Path

from steps.runtime.storage.base import Storage
from steps.runtime.storage.local import LocalStorage
from steps.runtime.storage.manifest import MANIFEST, StorageError, StoredDir, file_sha256
from steps.runtime.storage.s3 import SCHEME as _S3_SCHEME
from steps.runtime.storage.s3 import S3Storage

__all__ = ["MANIFEST", "Storage", "StorageError", "StoredDir", "fetch", "file_sha256", "open_storage"]


def open_storage(uri: str | Path) -> Storage:
    """The storage rooted at `uri`: an s3:// prefix, or else a local folder."""
    uri = str(uri)
    return S3Storage(uri) if uri.startswith(_S3_SCHEME) else LocalStorage(uri)


def fetch(stored: StoredDir | dict, target: Path | None = None, verify: bool = True) -> Path:
    """A local folder with a stored folder's files, checked against its reference (see `Storage.fetch`)."""
    if isinstance(stored, dict):
        stored = StoredDir.from_dict(stored)
    return open_storage(stored.uri).fetch(stored.sha256, target, verify)
