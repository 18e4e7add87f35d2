"""The packed blocks of the dataset folder (`steps.formats.dataset`): written by prepare, read by train and evaluate.

Each split is a `datasets` Arrow folder of one `input_ids` column of equal-length
int32 rows: documents concatenated with a separator token after each, cut into
blocks; the last partial block is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, Value, load_from_disk
from datasets import Sequence as ListOf
from datasets.arrow_writer import ArrowWriter

BLOCK_FEATURES = Features({"input_ids": ListOf(Value("int32"))})


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
        self.out_dir = Path(out_dir)
        self._staging = self.out_dir.with_name(self.out_dir.name + ".staging.arrow")
        self._writer = ArrowWriter(features=BLOCK_FEATURES, path=str(self._staging))
        self._packer = BlockPacker(block_size, eos_id)
        self.blocks = 0

    def add(self, token_lists: Sequence[Sequence[int]]) -> None:
        blocks = self._packer.add(token_lists)
        if len(blocks):
            offsets = np.arange(0, blocks.size + 1, blocks.shape[1], dtype=np.int32)
            column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(blocks.reshape(-1)))
            self._writer.write_table(pa.table({"input_ids": column}))
            self.blocks += len(blocks)

    def close(self, max_shard_size: str = "256MB") -> int:
        """Finish the Arrow folder (`save_to_disk` layout, sharded) and return the number of blocks."""
        self._writer.finalize()
        self._writer.close()
        if self.blocks:
            # Memory-mapped: re-sharding into the save_to_disk layout streams from disk.
            Dataset.from_file(str(self._staging)).save_to_disk(str(self.out_dir), max_shard_size=max_shard_size)
        self._staging.unlink(missing_ok=True)
        return self.blocks


def load_blocks(split_dir: str | Path) -> np.ndarray:
    """A packed split as an (n_blocks, block_size) int32 array over the memory-mapped Arrow file."""
    column = load_from_disk(str(split_dir)).data.column("input_ids").combine_chunks()
    lengths = set(np.diff(column.offsets.to_numpy()).tolist())
    if len(lengths) != 1:
        raise ValueError(f"{split_dir}: blocks have different lengths {sorted(lengths)[:5]}; prepare it again")
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), lengths.pop())
