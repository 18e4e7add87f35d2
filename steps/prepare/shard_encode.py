"""prepare's second phase, per shard: the tokens of each kept document, written in corpus order.

About 1 MB of text is encoded per call (the tokenizer's own threads share it); the token lists go to
`tokens.arrow` with each document's position and side, for the last join to pack.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from steps.prepare.console import say
from steps.prepare.shard_decide import sides_file
from steps.prepare.shard_rows import ROWS_FILE, TOKEN_SCHEMA, TOKENS_FILE, RowWriter, read_rows
from steps.runtime.progress_clock import ProgressClock

# Text encoded per call: enough for the tokenizer's threads to share, small enough that the Encoding
# objects (ids, offsets, token strings) held per call stay a few tens of MB whatever the corpus size.
ENCODE_CHARS = 1 << 20


def encode_texts(texts: list[str], tokenizer) -> list[list[int]]:
    if getattr(tokenizer, "is_fast", False):
        # The Rust batch encoder straight away, in parallel threads, without offsets or attention masks.
        return [e.ids for e in tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _kept(shard_dir: Path, sides: np.ndarray) -> Iterator[dict]:
    for number, row in enumerate(read_rows(Path(shard_dir) / ROWS_FILE, ("unit", "item", "doc_id", "text"))):
        if sides[number] >= 0:
            row["validation"] = bool(sides[number])
            yield row


def _chunks(rows: Iterator[dict], chars: int) -> Iterator[list[dict]]:
    chunk: list[dict] = []
    size = 0
    for row in rows:
        chunk.append(row)
        size += len(row["text"])
        if size >= chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _write(writer: RowWriter, chunk: list[dict], job: Future) -> None:
    writer.write([{**row, "ids": tokens} for row, tokens in zip(chunk, job.result(), strict=True)])


def encode_shard(
    shard: int, shard_dir: Path, decisions_dir: Path, tokenizer, out_dir: Path, progress_every_s: float = 10.0
) -> Path:
    """Write `<out_dir>/tokens.arrow`: (position, doc id, side, token ids) of the shard's kept documents."""
    sides = np.load(sides_file(decisions_dir, shard), mmap_mode="r")
    path = Path(out_dir) / TOKENS_FILE
    writer = RowWriter(path, TOKEN_SCHEMA)
    progress = ProgressClock(progress_every_s)
    try:
        # The next chunk is encoded (the Rust threads, without the GIL) while this one's ids are converted and
        # written: done in turn, the cores idled through each chunk's conversion and the tail of its encode.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-encode") as encoder:
            pending: tuple[list[dict], Future] | None = None
            for chunk in _chunks(_kept(shard_dir, sides), ENCODE_CHARS):
                job = encoder.submit(encode_texts, [row.pop("text") for row in chunk], tokenizer)
                if pending is not None:
                    _write(writer, *pending)
                pending = chunk, job
                if progress.due():
                    say(f"encoding: shard {shard}, {writer.rows:,} documents, {progress.elapsed():.0f} s")
            if pending is not None:
                _write(writer, *pending)
    finally:
        writer.close()
    return path
