"""Hugging Face model folders: the base model a user gives (local or in object storage), and the converted one.

Every stage that starts from the base model (prepare for its tokenizer, train for
its weights, evaluate for the untuned comparison) resolves `model.base_model`
here, to a local folder with the model's `config.json`.
"""

from __future__ import annotations

from pathlib import Path

from steps.runtime.storage import StorageError, open_storage

CONVERSION_FILE = "conversion.json"
"""The verification record convert writes into the model folder, beside the weights."""


def resolve_base_model(spec: str | None, download_to: Path | None = None) -> Path | None:
    """A local folder for the base model: as given, or a download of an object-store prefix; None for none.

    `download_to`: where a download goes, inside the calling stage's temporary folder so that
    the copy goes when the stage ends (see `steps.runtime.scratch`).
    """
    if not spec:
        return None
    try:
        folder = open_storage(spec).materialize(download_to)
    except StorageError as exc:
        raise FileNotFoundError(f"model.base_model = {spec!r}: {exc}") from None
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model.base_model = {spec!r} is not a Hugging Face model folder (no config.json)")
    return folder
