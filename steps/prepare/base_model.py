"""The base model as this run stores it: prepare writes `model.base_model` into its output as a Hugging Face folder.

Whatever the source (a local Hugging Face folder, an `s3://` prefix, or a GGUF file by path or inside
an installed package), the run gets one folder, published with its manifest as `prepare/base_model`;
train and evaluate take it as an ordinary input, checked against its hash, and a resumed run reuses the
one of the run it resumes (its prepare is that run's). A GGUF file is dequantized once per run, here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from steps.formats.gguf_source import gguf_file, is_gguf
from steps.runtime.error_text import NotFound
from steps.runtime.storage import StorageError, open_storage

PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weights in pickle formats, which a folder may hold beside its safetensors: never loaded here, not copied."""


def _copy_local_folder(source: Path, target: Path) -> None:
    """The files a Hugging Face folder loads from (its top level, safetensors and JSON and tokenizer files)."""
    target.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.suffix not in PICKLED_WEIGHTS:
            shutil.copy2(path, target / path.name)


def store_base_model(spec: str | None, target: Path) -> Path | None:
    """Write the base model `spec` names into `target` (which must not exist yet); None when there is none."""
    if not spec:
        return None
    if is_gguf(spec):
        source = gguf_file(spec)
        # Imported here: it loads torch, which prepare's read phase (N parallel workers) never needs.
        from steps.formats.gguf_model import dequantize_gguf  # noqa: PLC0415

        dequantize_gguf(source, target)
        return target
    storage = open_storage(spec)
    if storage.local_path is not None:
        if not storage.local_path.is_dir():
            raise NotFound(f"model.base_model = {spec!r}: no such folder")
        _copy_local_folder(storage.local_path, target)
    else:
        try:
            storage.materialize(target)
        except StorageError as exc:
            raise NotFound(f"model.base_model = {spec!r}: {exc}") from None
    if not (target / "config.json").is_file():
        shutil.rmtree(target, ignore_errors=True)
        raise NotFound(f"model.base_model = {spec!r} is not a Hugging Face model folder (no config.json)")
    return target
