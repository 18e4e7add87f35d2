"""Hugging Face model folders: the converted one's verification record, and what a base model folder must fit.

The base model itself is stored by prepare (`steps.prepare.base_model`) and read by
train and evaluate with `steps.formats.model`.
"""

from __future__ import annotations

import json
from pathlib import Path

from steps.config import ConfigError
from steps.results import ConversionRecord
from steps.runtime.error_text import NotFound

CONVERSION_FILE = "conversion.json"
"""The verification record convert writes into the model folder, beside the weights."""


def read_conversion(model_dir: str | Path) -> ConversionRecord:
    """The verification record of a converted model folder (which carries the untuned weights' fingerprint)."""
    path = Path(model_dir) / CONVERSION_FILE
    if not path.is_file():
        raise NotFound(f"{model_dir} has no {CONVERSION_FILE}: evaluate takes a folder that convert wrote")
    return ConversionRecord.model_validate_json(path.read_text())


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
