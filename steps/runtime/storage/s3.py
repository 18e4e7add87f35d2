"""Storage under an S3 prefix: the run's files beside Metaflow's S3 datastore.

The endpoint follows Metaflow's and boto3's settings (`METAFLOW_S3_ENDPOINT_URL`,
`AWS_ENDPOINT_URL`), which is also how the tests point it at a local S3 API.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from steps.runtime.storage.base import Storage
from steps.runtime.storage.manifest import MANIFEST, StorageError

SCHEME = "s3://"


def s3_client():
    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI, the key without surrounding slashes."""
    bucket, _, key = uri.removeprefix(SCHEME).partition("/")
    return bucket, key.strip("/")


class S3Storage(Storage):
    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.bucket, self.prefix = split_s3_uri(self.root)
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client()
        return self._client

    @property
    def local_path(self) -> None:
        return None

    def _key(self, name: str) -> str:
        return "/".join(part for part in (self.prefix, self.inside(name)) if part)

    def list(self, name: str = "") -> list[str]:
        return list(self.sizes(name))

    def sizes(self, name: str = "") -> dict[str, int]:
        """Every file under `name` (relative to it, sorted) and its size in bytes, from the listing alone."""
        # The trailing slash keeps `corpus/` from also listing `corpus-private/`.
        prefix = self._key(name)
        prefix = f"{prefix}/" if prefix else ""
        found = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.update({obj["Key"][len(prefix) :]: obj["Size"] for obj in page.get("Contents", [])})
        return {path: found[path] for path in sorted(found) if path and not path.endswith("/")}

    def get_text(self, name: str) -> str | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read().decode()
        except self.client.exceptions.NoSuchKey:
            return None

    def put_text(self, name: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=text.encode())

    def put_file(self, local: Path, name: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._key(name))

    def get_file(self, name: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self._key(name), str(local))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise StorageError(f"{self.uri(name)} does not exist") from None
            raise

    def delete(self, name: str = "") -> None:
        # `name` may be one object or a folder of them.
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        for relative in self.list(name):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(f"{name}/{relative}" if name else relative))

    def _store_folder(self, local_dir: Path, name: str, manifest: dict[str, Any]) -> None:
        # The manifest goes last, so a reader never takes a half-uploaded folder for a whole one.
        self.client.delete_object(Bucket=self.bucket, Key=self._key(f"{name}/{MANIFEST}"))
        for entry in manifest["files"]:
            if (local_dir / entry["path"]).is_file():  # entries stored by others are already there
                self.put_file(local_dir / entry["path"], f"{name}/{entry['path']}")
        self.put_text(f"{name}/{MANIFEST}", json.dumps(manifest))
