"""prepare's last join: every shard's tokens, in corpus order, packed into each side's Arrow blocks.

Packing is a single stream (a block spans documents, and a document's place in the stream decides the
blocks), so it happens in one process, reading the shards' token files merged by corpus position: the
blocks are the same bytes whatever the number of shards.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from steps.config import DataConfig
from steps.formats.blocks import BlockWriter
from steps.formats.dataset import SPLITS, write_prompts
from steps.prepare.console import say
from steps.prepare.corpus import CorpusError
from steps.prepare.shard_rows import TOKENS_FILE
from steps.prepare.tokenizer_training import document_separator
from steps.runtime.progress_clock import ProgressClock

_PACK_DOCS = 1024


def _token_rows(path: Path) -> Iterator[tuple[int, int, str, bool, np.ndarray]]:
    """(unit, item, doc id, validation, token ids) per document, the ids as numpy views of the mapped file."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            ids = batch.column("ids")
            offsets = ids.offsets.to_numpy()
            values = ids.values.to_numpy(zero_copy_only=False)
            units, items = batch.column("unit").to_pylist(), batch.column("item").to_pylist()
            doc_ids, sides = batch.column("doc_id").to_pylist(), batch.column("validation").to_pylist()
            for row in range(batch.num_rows):
                yield units[row], items[row], doc_ids[row], sides[row], values[offsets[row] : offsets[row + 1]]


def merged_tokens(encoded_dirs: list[Path]) -> Iterator[tuple[int, int, str, bool, np.ndarray]]:
    streams = [_token_rows(Path(folder) / TOKENS_FILE) for folder in encoded_dirs]
    return heapq.merge(*streams, key=lambda row: row[:2])


def _prompt(doc_id: str, ids: list[int], tokenizer, data: DataConfig) -> dict[str, Any]:
    """A held-out document cut into a prompt and the reference continuation."""
    prompt_ids = ids[: data.prompt_tokens]
    return {
        "doc_id": doc_id,
        "prompt": tokenizer.decode(prompt_ids),
        "prompt_ids": prompt_ids,
        "reference": tokenizer.decode(ids[data.prompt_tokens : data.prompt_tokens * 2]),
    }


def pack_dataset(
    encoded_dirs: list[Path],
    tokenizer,
    documents: dict[str, int],
    data: DataConfig,
    dataset_dir: Path,
    progress: ProgressClock,
    require_prompts: bool,
) -> dict:
    """Each side's blocks, the held-out prompts; returns the counts for the summary."""
    _, separator_id = document_separator(tokenizer, data.document_separator)
    writers = {side: BlockWriter(dataset_dir / side, data.block_size, separator_id) for side in SPLITS}
    tokens = {"train": 0, "validation": 0}
    token_counts = array("I")
    prompts: list[dict[str, Any]] = []
    longest_held_out = 0
    pending: dict[str, list[np.ndarray]] = {"train": [], "validation": []}
    for _, _, doc_id, validation, ids in merged_tokens(encoded_dirs):
        side = "validation" if validation else "train"
        pending[side].append(ids)
        tokens[side] += len(ids)
        token_counts.append(len(ids))
        if validation:
            longest_held_out = max(longest_held_out, len(ids))
            if len(prompts) < data.eval_prompts and len(ids) >= data.prompt_tokens + 8:
                prompts.append(_prompt(doc_id, ids.tolist(), tokenizer, data))
        if len(pending[side]) >= _PACK_DOCS:
            writers[side].add(pending[side])
            pending[side] = []
        if progress.due():
            say(
                f"encoding: {len(token_counts):,} of {sum(documents.values()):,} documents packed, "
                f"{sum(tokens.values()):,} tokens, {progress.elapsed():.0f} s"
            )
    for side, token_lists in pending.items():
        writers[side].add(token_lists)
    blocks = {side: writer.close() for side, writer in writers.items()}
    if blocks["train"] == 0 or blocks["validation"] == 0:
        raise CorpusError(
            f"too little text for data.block_size = {data.block_size}: {blocks['train']} training and "
            f"{blocks['validation']} validation blocks; add documents, lower data.block_size or raise "
            "data.validation_fraction"
        )
    if not prompts and require_prompts:
        # evaluate would stop on this after training: say it now.
        raise CorpusError(
            f"no held-out document is long enough for an evaluation prompt: data.prompt_tokens = "
            f"{data.prompt_tokens} needs documents of at least {data.prompt_tokens + 8} tokens, and the longest of "
            f"the {documents['validation']} validation documents has {longest_held_out}; lower "
            "data.prompt_tokens, raise data.validation_fraction, add longer documents or set evaluate.prompt_file"
        )
    write_prompts(dataset_dir, prompts)
    return {"tokens": tokens, "blocks": blocks, "prompts": len(prompts), "token_counts": token_counts}
