"""General-domain text for the forgetting check: perplexity on prose far from the security corpus, before and after.

Tuning on a domain should lower the domain's perplexity without raising everything
else's; this measures the second half instead of assuming it. The default sample is the
Python language reference that ships inside every Python (`pydoc_data.topics`: 79
topics, ~465K characters of English technical prose), so it needs no download;
`evaluate.general_text` points at a user's own general text file instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np

from steps.config import EvaluateConfig
from steps.formats.dataset import DATASET_SUMMARY_FILE
from steps.runtime.error_text import NotFound

PYTHON_DOCS = "python-docs"
"""`evaluate.general_text` value meaning the Python language reference shipped with Python."""
AUTO = "auto"
"""`evaluate.general_text` value meaning PYTHON_DOCS for a base model, nothing for a model built from scratch."""


def general_source(settings: EvaluateConfig, base_model: bool) -> str | None:
    """The general text in effect: `auto` resolved by whether training started from a base model."""
    if settings.general_text == AUTO:
        return PYTHON_DOCS if base_model else None
    return settings.general_text or None


def _texts(source: str) -> list[str]:
    if source == PYTHON_DOCS:
        return [topics[name] for name in sorted(topics)]
    path = Path(source).expanduser()
    if not path.is_file():
        raise NotFound(
            f"evaluate.general_text = {source!r}: no such file; give a UTF-8 text file of general-domain prose, "
            f"{PYTHON_DOCS!r} for the Python reference, or leave it empty to skip the general perplexity"
        )
    return [part for part in path.read_text(encoding="utf-8").split("\n\n") if part.strip()]


def general_blocks(settings: EvaluateConfig, tokenizer, block_size: int, separator_id: int) -> list[list[int]]:
    """`settings.general_blocks` blocks of `block_size` tokens spread evenly over the sample; [] when off."""
    if not settings.general_text:
        return []
    ids: list[int] = []
    for text in _texts(settings.general_text):
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [separator_id]
    available = len(ids) // block_size
    if available == 0:
        raise ValueError(
            f"evaluate.general_text = {settings.general_text!r} has {len(ids)} tokens, fewer than one block "
            f"of data.block_size = {block_size}; give more text"
        )
    starts = np.linspace(0, available - 1, num=min(settings.general_blocks, available), dtype=int) * block_size
    return [ids[start : start + block_size] for start in sorted(set(starts.tolist()))]


def general_blocks_like(settings: EvaluateConfig, tokenizer, dataset_dir: Path, base_model: bool) -> list[list[int]]:
    """General-text blocks packed the way prepare packed the domain's: its block size and document separator."""
    settings = settings.model_copy(update={"general_text": general_source(settings, base_model)})
    summary = json.loads((Path(dataset_dir) / DATASET_SUMMARY_FILE).read_text())
    separator = summary.get("separator_id")
    return general_blocks(
        settings, tokenizer, summary["block_size"], tokenizer.eos_token_id if separator is None else separator
    )
