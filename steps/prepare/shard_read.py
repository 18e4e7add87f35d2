"""prepare's first phase, per shard: read, clean, redact and fingerprint the shard's documents.

Nothing is decided here that needs another shard: a document that passes cleaning is written with its
text, SHA-256 and MinHash signature, and the join (`steps.prepare.shard_decide`) decides duplicates and
the split for the whole corpus. Cleaning runs in `data.num_proc` worker processes
(`steps.prepare.corpus.cleaned_batches`), so one shard uses its machine's cores.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import numpy as np

from steps.config import DataConfig
from steps.formats.dataset import document_id
from steps.prepare.archives import nested_zip, reading_tally
from steps.prepare.console import say
from steps.prepare.corpus import (
    CorpusError,
    clean_settings,
    cleaned_batches,
    corpus_sources,
    document_batches,
    format_label,
    read_limits,
    reading_processes,
    strict_error,
)
from steps.prepare.extract import Limits, RecordSkip, Source, open_zip, read_source
from steps.prepare.read_guard import error_reason
from steps.prepare.shard_plan import ShardPart, ShardPlan, Unit
from steps.prepare.shard_rows import END, ROW_SCHEMA, ROWS_FILE, TIMING_FILE, RowWriter
from steps.prepare.shard_sources import shard_sources
from steps.runtime.progress_clock import ProgressClock


class _Item(NamedTuple):
    unit: int
    item: int
    kind: str
    source: str
    doc_id: str
    format: str
    reason: str | None = None
    encoding: str | None = None


class ShardReadError(CorpusError):
    """A shard's reading failed; names the shard's files so that the failed foreach task says what it read."""


def plan_and_read_shard(data: DataConfig, workers: int, shard: int, out_dir: Path, progress_every_s: float = 10.0):
    """What one foreach worker does: plan the shards (every worker plans alike; the join checks), save the plan
    to `<out_dir>/plan.json`, then read its own shard; of an s3:// corpus, only its shard's files are downloaded
    (`steps.prepare.shard_sources`)."""
    started = time.perf_counter()
    with shard_sources(data, workers, shard) as (plan, root):
        plan.save(Path(out_dir))
        if workers > 1:
            sizes = ", ".join(f"{b / 1e6:.1f}" for b in plan.shard_bytes())
            say(f"shard {shard}: {len(plan.units):,} sources planned into {workers} shards of {sizes} MB")
        read_shard(data, plan, shard, out_dir, progress_every_s, root=root)
    (Path(out_dir) / TIMING_FILE).write_text(json.dumps({"read_clean_dedupe": time.perf_counter() - started}))


def read_shard(
    data: DataConfig,
    plan: ShardPlan,
    shard: int,
    out_dir: Path,
    progress_every_s: float = 10.0,
    root: Path | None = None,
) -> Path:  # noqa: E501
    """Write the shard's rows (`steps.prepare.shard_rows`) to `<out_dir>/rows.arrow`; returns that file."""
    if root is None:
        with corpus_sources(data.corpus) as (opened_root, _, _):
            return read_shard(data, plan, shard, out_dir, progress_every_s, opened_root)
    path = Path(out_dir) / ROWS_FILE
    writer = RowWriter(path, ROW_SCHEMA)
    progress = ProgressClock(progress_every_s)
    try:
        with _Archives(data) as archives:
            items = _items(plan, shard, archives.source_of(root), read_limits(data), data.strict)
            cleaned = cleaned_batches(document_batches(items), clean_settings(data), reading_processes(data))
            for metas, docs in cleaned:
                writer.write([_row(meta, doc) for meta, doc in zip(metas, docs, strict=True)])
                if len(plan.shards) > 1 and progress.due():  # one shard: the join's `reading:` lines say it
                    say(f"shard {shard}: {writer.rows:,} rows read, {progress.elapsed():.0f} s")
    except CorpusError as exc:
        if len(plan.shards) == 1:
            raise  # the file it names is all there is to say
        raise ShardReadError(f"prepare shard {shard} ({files_of_shard(plan, shard)}): {exc}") from None
    finally:
        writer.close()
    return path


class _Archives(ExitStack):
    """The zip archives a shard reads from: each on disk opened once; of nested ones, the last chain opened
    (a shard's members of one nested archive come one after another, so each is copied out once)."""

    def __init__(self, data: DataConfig) -> None:
        super().__init__()
        self._limits = read_limits(data).archives
        self._outer: dict[Path, zipfile.ZipFile] = {}
        self._nested_key: tuple | None = None
        self._nested = ExitStack()
        self._nested_archive: zipfile.ZipFile | None = None
        self.callback(self._nested.close)

    def source_of(self, root: Path):
        def source_of(unit: Unit) -> Source:
            file = root / unit.path
            if unit.member is None:
                return Source(unit.name, file)
            archive = self._archive(file, unit.chain[:-1])
            return Source(unit.name, file, archive.infolist()[unit.chain[-1]], archive)

        return source_of

    def _archive(self, file: Path, chain: tuple[int, ...]) -> zipfile.ZipFile:
        if file not in self._outer:
            self._outer[file] = self.enter_context(open_zip(file))
        if not chain:
            return self._outer[file]
        if self._nested_key != (file, chain):
            self._nested.close()
            self._nested_key, archive = None, self._outer[file]
            tally = reading_tally(self._limits)
            for index in chain:
                archive = self._nested.enter_context(nested_zip(archive, archive.infolist()[index], tally))
            self._nested_key, self._nested_archive = (file, chain), archive
        return self._nested_archive


def files_of_shard(plan: ShardPlan, shard: int, shown: int = 5) -> str:
    """The first few of a shard's file names, for an error that says what a failed reader had."""
    names = plan.files_of(shard)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _items(plan: ShardPlan, shard: int, source_of, limits: Limits, strict: bool) -> Iterator[tuple[_Item, str]]:
    """(position and kind, raw text) of the shard's rows in corpus order; non-document rows carry no text."""
    for part in plan.shards[shard]:
        unit = plan.units[part.unit]
        if unit.skip is not None:
            if part.stripe == 0:
                yield _Item(part.unit, END, "skip_file", unit.name, unit.name, "", unit.skip), ""
            continue
        yield from _unit_items(part, unit, source_of, limits, strict)


def _unit_items(part: ShardPart, unit: Unit, source_of, limits: Limits, strict: bool):
    """One source's rows. Whatever reading it raises (a parser's assertion, an integer overflow, a bug) leaves
    out this source alone, with the exception's type as the reason: one file never aborts a corpus."""
    try:
        source = source_of(unit)
        if part.stripe == 0:
            yield _Item(part.unit, -1, "source", unit.name, unit.name, format_label(source)), ""
        for number, item in enumerate(read_source(source, limits)):
            if number % part.stripes != part.stripe:
                continue  # another stripe's document
            if isinstance(item, RecordSkip):
                if strict:
                    raise CorpusError(f"{source.name} record {item.key}: {item.reason}; data.strict is on")
                doc_id = document_id(source.name, item.key)
                yield _Item(part.unit, number, "record_skip", source.name, doc_id, "", item.reason), ""
                continue
            key, text, fmt, encoding = item
            fmt = f"{fmt}.gz" if source.compressed else fmt
            doc_id = document_id(source.name, key)
            yield _Item(part.unit, number, "document", source.name, doc_id, fmt, None, encoding), text
    except CorpusError:
        raise
    except Exception as exc:
        if strict:
            raise strict_error(unit.name, error_reason(exc)) from None
        if part.stripe == 0:  # every stripe meets the failure; one reports it
            yield _Item(part.unit, END, "skip_file", unit.name, unit.name, "", error_reason(exc)), ""


def _row(meta: _Item, doc) -> dict:
    row = meta._asdict()
    if meta.kind != "document":
        return row
    row["redactions"] = ", ".join(f"{kind}={n}" for kind, n in sorted(doc.redactions.items())) or None
    row["reason"] = doc.drop_reason
    if doc.drop_reason is None:
        row.update(chars=len(doc.text), digest=doc.digest, text=doc.text)
        if doc.signature is not None:
            signature = np.asarray(doc.signature)  # whatever array type the MinHash gives, stored as its bytes
            row.update(signature=signature.tobytes(), sig_dtype=signature.dtype.str)
    return row
