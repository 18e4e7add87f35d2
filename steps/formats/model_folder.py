"""Hugging Face model folders: the base model a user gives (local or in object storage), and the converted one.

Every stage that starts from the base model (prepare for its tokenizer, train for
its weights, evaluate for the untuned comparison) resolves `model.base_model`
here, to a local folder with the model's `config.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from steps.config import ConfigError
from steps.formats.gguf_source import GGUF_SOURCE_FILE, gguf_file, is_gguf
from steps.runtime.error_text import NotFound
from steps.runtime.launch import run_module
from steps.runtime.storage import MANIFEST, Storage, StorageError, StoredDir, file_sha256, open_storage
from steps.runtime.storage.manifest import manifest_sha256, stored_dir

CONVERSION_FILE = "conversion.json"
"""The verification record convert writes into the model folder, beside the weights."""


BASE_MODEL = "base_model"
"""Where a GGUF base model's dequantized folder is published in the run's storage."""


def resolve_base_model(
    spec: str | None, download_to: Path, storage: Storage | None = None, copy: StoredDir | None = None
) -> Path | None:
    """A local folder for the base model: as given, a download of an object-store prefix, or a GGUF file
    dequantized (once per run: the folder is published in the run's `storage`, and reused after every file
    is checked against its manifest); None for none.

    `copy`: the dequantized copy prepare published (`PrepareResult.base_model_copy`), used before the run's
    `storage` is looked in: a resumed run's prepare is the one of the run it resumes, whose files hold the copy.
    `download_to`: where a download or a dequantized copy goes, inside the calling stage's temporary
    folder so that the copy goes when the stage ends (see `steps.runtime.scratch`).
    """
    if not spec:
        return None
    if is_gguf(spec):
        return _dequantized(spec, storage, download_to, copy)
    try:
        folder = open_storage(spec).materialize(download_to)
    except StorageError as exc:
        raise NotFound(f"model.base_model = {spec!r}: {exc}") from None
    if not (folder / "config.json").is_file():
        raise NotFound(f"model.base_model = {spec!r} is not a Hugging Face model folder (no config.json)")
    return folder


def published_copy(spec: str | None, storage: Storage) -> StoredDir | None:
    """The run's dequantized copy of a GGUF base model, as published in `storage`; None for any other base model."""
    if not spec or not is_gguf(spec):
        return None
    text = storage.get_text(f"{BASE_MODEL}/{MANIFEST}")
    return stored_dir(storage.uri(BASE_MODEL), json.loads(text)) if text is not None else None


def _dequantized(spec: str, storage: Storage | None, download_to: Path, copy: StoredDir | None) -> Path:
    source = gguf_file(spec)
    if copy is not None:  # prepare's copy: in a resumed run, in the files of the run it resumes
        found = _stored_copy(spec, source, open_storage(copy.uri), download_to, copy.sha256)
        if found is not None:
            return found
    if storage is not None:
        found = _stored_copy(spec, source, storage.child(BASE_MODEL), download_to)
        if found is not None:
            return found
    # The conversion needs torch, which controllers do not import: a child process does it.
    run_module("steps.formats.gguf_model", ["--gguf", str(source), "--out", str(download_to)])
    if storage is not None:
        storage.publish(download_to, BASE_MODEL)
    return download_to


def _stored_copy(spec: str, source: Path, stored: Storage, download_to: Path, sha256: str | None = None) -> Path | None:
    """The run's dequantized copy of `source`, every file checked against the copy's manifest (and the manifest
    against `sha256` when given); None when there is none (yet, or any more).

    Train and evaluate load these weights: a changed or truncated file, or a copy made from
    another GGUF file than the one `spec` names now, is an error rather than a silently different model.
    """
    text = stored.get_text(MANIFEST)
    if text is None:
        return None
    redo = f"remove {stored.root} to dequantize {source.name} again"
    try:
        folder = stored.fetch(sha256 or manifest_sha256(json.loads(text)), download_to, verify=True)
    except StorageError as exc:
        raise StorageError(
            f"model.base_model = {spec!r}: the run's dequantized copy is damaged: {exc}; {redo}"
        ) from None
    record = folder / GGUF_SOURCE_FILE
    made_from = json.loads(record.read_text()).get("sha256") if record.is_file() else None
    if made_from != file_sha256(source):
        raise StorageError(
            f"model.base_model = {spec!r}: the run's dequantized copy {stored.root} was made from another GGUF file "
            f"(sha256 {str(made_from)[:12]}, {source} has {file_sha256(source)[:12]}); {redo}"
        )
    return folder


def check_block_fits(model_dir: str | Path, block_size: int) -> None:
    """Refuse blocks longer than the base model's positions: positions past them are untrained or out of range."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():  # a tokenizer-only folder (prepare needs no weights): nothing to check against
        return
    positions = json.loads(config_file.read_text()).get("max_position_embeddings")
    if positions is not None and block_size > positions:
        raise ConfigError(
            f"data.block_size ({block_size}) is larger than the base model's max_position_embeddings ({positions}) "
            f"in {model_dir}/config.json; lower data.block_size to at most {positions}"
        )
