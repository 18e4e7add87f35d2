"""Tokenize documents, split them by document, and pack tokens into fixed-length blocks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np


def is_validation(doc_id: str, fraction: float, seed: int) -> bool:
    """Deterministic split by document: the same id lands on the same side in every run."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_by_document(doc_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation documents; both sides get at least one document."""
    if len(doc_ids) < 2:
        raise ValueError(f"need at least 2 documents to split train/validation, got {len(doc_ids)}")
    validation = [i for i, d in enumerate(doc_ids) if is_validation(d, fraction, seed)]
    if not validation:
        validation = [min(range(len(doc_ids)), key=lambda i: hashlib.sha256(f"{seed}:{doc_ids[i]}".encode()).digest())]
    if len(validation) == len(doc_ids):
        validation = validation[1:]
    held = set(validation)
    return [i for i in range(len(doc_ids)) if i not in held], validation


def pack_into_blocks(token_lists: Iterator[Sequence[int]], block_size: int, eos_id: int) -> Iterator[np.ndarray]:
    """Concatenate documents with EOS after each and cut into blocks; the last partial block is dropped."""
    buffer: list[int] = []
    for tokens in token_lists:
        buffer.extend(tokens)
        buffer.append(eos_id)
        while len(buffer) >= block_size:
            yield np.asarray(buffer[:block_size], dtype=np.int32)
            del buffer[:block_size]


def load_blocks(split_dir: str | Path) -> np.ndarray:
    """A packed split as an (n_blocks, block_size) int32 array over the memory-mapped Arrow file."""
    from datasets import load_from_disk

    column = load_from_disk(str(split_dir)).data.column("input_ids").combine_chunks()
    lengths = set(np.diff(column.offsets.to_numpy()).tolist())
    if len(lengths) != 1:
        raise ValueError(f"{split_dir}: blocks have different lengths {sorted(lengths)[:5]}; prepare it again")
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), lengths.pop())
