"""Tokenize documents, split them by document, and pack tokens into fixed-length blocks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from datasets import Features, Value
from datasets import Sequence as ListOf

BLOCK_FEATURES = Features({"input_ids": ListOf(Value("int32"))})


def is_validation(doc_id: str, fraction: float, seed: int) -> bool:
    """Deterministic split by document: the same id lands on the same side in every run."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _rank(doc_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()


class DocumentSplit:
    """The train/validation split decided one document at a time, in constant memory.

    `observe` every document id first; `finish` then makes sure both sides get a document (the
    lowest-ranked document goes to validation if none did; the first held-out one goes back to
    training if all did), and `is_validation` answers for any observed id.
    """

    def __init__(self, fraction: float, seed: int) -> None:
        self.fraction, self.seed = fraction, seed
        self.counts = {"train": 0, "validation": 0}
        self._lowest: tuple[bytes, str] | None = None
        self._first_validation: str | None = None
        self._moved: tuple[str, bool] | None = None

    def observe(self, doc_id: str) -> None:
        rank = _rank(doc_id, self.seed)
        if self._lowest is None or rank < self._lowest[0]:
            self._lowest = (rank, doc_id)
        if is_validation(doc_id, self.fraction, self.seed):
            self.counts["validation"] += 1
            self._first_validation = self._first_validation or doc_id
        else:
            self.counts["train"] += 1

    def finish(self) -> None:
        total = self.counts["train"] + self.counts["validation"]
        if total < 2:
            raise ValueError(f"need at least 2 documents to split train/validation, got {total}")
        if self.counts["validation"] == 0:
            self._moved = (self._lowest[1], True)
        elif self.counts["train"] == 0:
            self._moved = (self._first_validation, False)
        if self._moved:
            side = "validation" if self._moved[1] else "train"
            self.counts[side] += 1
            self.counts["train" if side == "validation" else "validation"] -= 1

    def is_validation(self, doc_id: str) -> bool:
        if self._moved and self._moved[0] == doc_id:
            return self._moved[1]
        return is_validation(doc_id, self.fraction, self.seed)


def split_by_document(doc_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation documents; both sides get at least one document."""
    split = DocumentSplit(fraction, seed)
    for doc_id in doc_ids:
        split.observe(doc_id)
    split.finish()
    held = [split.is_validation(d) for d in doc_ids]
    return [i for i, v in enumerate(held) if not v], [i for i, v in enumerate(held) if v]


def pack_into_blocks(token_lists: Iterator[Sequence[int]], block_size: int, eos_id: int) -> Iterator[np.ndarray]:
    """Concatenate documents with EOS after each and cut into blocks; the last partial block is dropped."""
    packer = BlockPacker(block_size, eos_id)
    for tokens in token_lists:
        yield from packer.add([tokens])


class BlockPacker:
    """Incremental packing: documents in, full blocks out, the partial tail carried to the next call."""

    def __init__(self, block_size: int, eos_id: int) -> None:
        self.block_size, self.eos_id = block_size, eos_id
        self._tail = np.zeros(0, dtype=np.int32)

    def add(self, token_lists: Sequence[Sequence[int]]) -> np.ndarray:
        """(n, block_size) int32 blocks completed by these documents (EOS after each)."""
        pieces = [self._tail]
        eos = np.asarray([self.eos_id], dtype=np.int32)
        for tokens in token_lists:
            pieces += [np.asarray(tokens, dtype=np.int32), eos]
        stream = np.concatenate(pieces)
        full = len(stream) // self.block_size * self.block_size
        self._tail = stream[full:].copy()
        return stream[:full].reshape(-1, self.block_size)


class BlockWriter:
    """Packs one split straight into a `datasets` Arrow folder, holding at most one chunk of tokens."""

    def __init__(self, out_dir: Path, block_size: int, eos_id: int) -> None:
        from datasets.arrow_writer import ArrowWriter

        self.out_dir = Path(out_dir)
        self._staging = self.out_dir.with_name(self.out_dir.name + ".staging.arrow")
        self._writer = ArrowWriter(features=BLOCK_FEATURES, path=str(self._staging))
        self._packer = BlockPacker(block_size, eos_id)
        self.blocks = 0

    def add(self, token_lists: Sequence[Sequence[int]]) -> None:
        import pyarrow as pa

        blocks = self._packer.add(token_lists)
        if len(blocks):
            offsets = np.arange(0, blocks.size + 1, blocks.shape[1], dtype=np.int32)
            column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(blocks.reshape(-1)))
            self._writer.write_table(pa.table({"input_ids": column}))
            self.blocks += len(blocks)

    def close(self, max_shard_size: str = "256MB") -> int:
        """Finish the Arrow folder (`save_to_disk` layout, sharded) and return the number of blocks."""
        from datasets import Dataset

        self._writer.finalize()
        self._writer.close()
        if self.blocks:
            # Memory-mapped: re-sharding into the save_to_disk layout streams from disk.
            Dataset.from_file(str(self._staging)).save_to_disk(str(self.out_dir), max_shard_size=max_shard_size)
        self._staging.unlink(missing_ok=True)
        return self.blocks


def load_blocks(split_dir: str | Path) -> np.ndarray:
    """A packed split as an (n_blocks, block_size) int32 array over the memory-mapped Arrow file."""
    from datasets import load_from_disk

    column = load_from_disk(str(split_dir)).data.column("input_ids").combine_chunks()
    lengths = set(np.diff(column.offsets.to_numpy()).tolist())
    if len(lengths) != 1:
        raise ValueError(f"{split_dir}: blocks have different lengths {sorted(lengths)[:5]}; prepare it again")
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), lengths.pop())
