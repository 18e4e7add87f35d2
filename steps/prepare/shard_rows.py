"""The files prepare's phases hand each other: one Arrow file of rows per shard, merged back in corpus order.

A row has its corpus position (unit, item): `item` is the document's (or skipped record's) number in its
source, -1 for the row that announces the source, and `END` for the source being skipped as a whole. Each
shard writes its rows in that order, so the shards merge into corpus order with a heap, streaming. Texts
stay in these files (memory-mapped); whoever needs only digests and signatures never reads them.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

END = 2**62
"""The `item` of a row that skips a whole source: after any of its documents read before it failed."""

ROWS_FILE = "rows.arrow"
TOKENS_FILE = "tokens.arrow"
TIMING_FILE = "seconds.json"
"""Each phase's output folder notes how long the phase took; the summary adds them up."""

ROW_SCHEMA = pa.schema(
    [
        ("unit", pa.int32()),
        ("item", pa.int64()),
        ("kind", pa.string()),  # source | skip_file | record_skip | document
        ("source", pa.string()),
        ("doc_id", pa.string()),
        ("format", pa.string()),
        ("reason", pa.string()),  # skip reasons; a document's drop reason before dedupe (too_short ...)
        ("encoding", pa.string()),  # the text encoding a document was decoded from, where prepare decoded it
        ("redactions", pa.string()),  # `kind=n` pairs, comma-separated
        ("chars", pa.int64()),
        ("digest", pa.binary()),
        ("signature", pa.binary()),  # the MinHash values' bytes, of dtype `sig_dtype`
        ("sig_dtype", pa.string()),
        ("text", pa.large_string()),  # only for documents that passed cleaning
    ]
)
TOKEN_SCHEMA = pa.schema(
    [
        ("unit", pa.int32()),
        ("item", pa.int64()),
        ("doc_id", pa.string()),
        ("validation", pa.bool_()),
        ("ids", pa.list_(pa.int32())),
    ]
)


class RowWriter:
    """Rows appended in batches to an Arrow IPC file (readable memory-mapped, column by column)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)
        self.rows = 0

    def write(self, rows: Sequence[dict]) -> None:
        if rows:
            self._writer.write_batch(pa.RecordBatch.from_pylist(list(rows), schema=self.schema))
            self.rows += len(rows)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def read_rows(path: Path, columns: Sequence[str]) -> Iterator[dict]:
    """The file's rows as dicts of the named columns only (other columns' pages are never touched)."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index).select(list(columns))
            yield from batch.to_pylist()


def row_count(path: Path) -> int:
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))


def merged(streams: Iterable[Iterator[dict]]) -> Iterator[tuple[int, int, dict]]:
    """(shard, row number within its shard, row) of every shard's rows, in corpus order."""

    def numbered(shard: int, rows: Iterator[dict]) -> Iterator[tuple[int, int, int, int, dict]]:
        for number, row in enumerate(rows):
            yield row["unit"], row["item"], shard, number, row

    keyed = [numbered(shard, rows) for shard, rows in enumerate(streams)]
    for _, _, shard, number, row in heapq.merge(*keyed, key=lambda entry: entry[:2]):
        yield shard, number, row


def signature_of(row: dict) -> np.ndarray | None:
    """The row's MinHash signature; None without one, or when its columns were not read (near dedupe off)."""
    if row.get("signature") is None:
        return None
    return np.frombuffer(row["signature"], dtype=np.dtype(row["sig_dtype"]))


def histogram(values: array, bins: int = 20) -> dict[str, list[float]]:
    counts, edges = np.histogram(np.frombuffer(values, dtype=np.uint32), bins=bins)
    return {"counts": counts.tolist(), "edges": edges.round(1).tolist()}
