"""Read a corpus into clean, deduplicated, redacted documents, accounting for every drop and change.

Sources: `cwe` (the CWE catalogue bundled with `cwe2`), a folder (recursive), a
glob, or an s3:// prefix; formats are in `steps.prepare.extract`. Files are read in a
stable order by this process; clean-up runs in `num_proc` worker processes on
batches of documents, with a bounded number of batches in flight, so memory
does not grow with the corpus; duplicates are decided here, in corpus order,
so the result does not depend on the number of workers.
"""

from __future__ import annotations

import gc
import glob
import multiprocessing
import os
import re
import shutil
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from steps.config import DEFAULT_CORPUS, DataConfig
from steps.formats.cwe_catalogue import bundled_catalogue_path
from steps.formats.dataset import document_id
from steps.prepare.clean import CleanSettings, clean_batch, normalise
from steps.prepare.corpus_files import folder_files, outside_links
from steps.prepare.extract import Limits, RecordSkip, SkipFile, Source, open_zip, read_source, zip_members
from steps.prepare.near_dedupe import DuplicateIndex
from steps.prepare.read_guard import error_reason
from steps.prepare.report import CorpusReport
from steps.runtime.storage import open_storage

__all__ = ["CorpusError", "CorpusReport", "Document", "iter_documents", "load_corpus", "normalise", "resolve_sources"]

_BATCH_DOCS = 256
_BATCH_CHARS = 4 << 20
# What a damaged file raises while being read: a truncated gzip (EOFError, zlib.error, BadGzipFile is an
# OSError), broken XML (lxml's XMLSyntaxError is a SyntaxError), bad text or JSON or CSV (ValueError and its
# subclasses), an encrypted zip member (RuntimeError, zipfile's choice).
READ_ERRORS = (SkipFile, OSError, EOFError, zlib.error, SyntaxError, ValueError, zipfile.BadZipFile, RuntimeError)


LINK_REASON = "symbolic link, not followed (it can point outside the corpus folder); copy the file in instead"


class CorpusError(ValueError):
    """A corpus that cannot be read or leaves nothing to train on."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    """Stable identifier: the source path, plus a record or weakness id inside it."""
    text: str


@dataclass(frozen=True)
class _Raw:
    doc_id: str
    source: str
    format: str


def resolve_sources(corpus: str) -> tuple[Path, list[Path], list[Path]]:
    """The folder that document ids are relative to, the files a corpus spec names, in a stable order,
    and the symbolic links met below that folder (not followed: they can point anywhere)."""
    if corpus == DEFAULT_CORPUS:
        catalogue = bundled_catalogue_path()
        return catalogue.parent, [catalogue], []
    storage = open_storage(corpus)
    if storage.local_path is None:  # an object-store prefix: read from a local copy
        return resolve_sources(str(storage.materialize(prefix="tune-corpus-")))
    path = Path(corpus).expanduser()
    links: list[Path] = []
    if path.is_dir():
        root, (files, links) = path, folder_files(path)
    elif path.is_file():
        root, files = path.parent, [path]
    else:
        # Ids are relative to the fixed part of the pattern, before its first wildcard.
        fixed = Path(re.split(r"[*?\[]", corpus, maxsplit=1)[0] or ".")
        root = fixed if fixed.is_dir() else fixed.parent
        files, links = outside_links(root, [Path(p) for p in glob.glob(corpus, recursive=True)])
    if not files and not links:
        raise CorpusError(f"data.corpus = {corpus!r} names no files: give a folder, a glob, an s3:// prefix or 'cwe'")
    return root, sorted(files), sorted(links)


def format_label(source: Source) -> str:
    label = source.format if source.format != "unknown" else (Path(source.inner_name).suffix.lstrip(".") or "none")
    return f"{label}.gz" if source.compressed else label


def file_name(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name


def _sources(root: Path, files: Iterable[Path], report: CorpusReport, strict: bool) -> Iterator[Source]:
    for path in files:
        name = file_name(root, path)
        if path.suffix.lower() != ".zip":
            yield Source(name, path)
            continue
        try:
            archive = open_zip(path)
        except SkipFile as exc:
            _skip(report, name, str(exc), strict)
            continue
        with archive:  # open while its members are read: once per archive, not once per member
            yield from zip_members(archive, path, name)


def strict_error(source: str, reason: str) -> CorpusError:
    return CorpusError(f"{source}: {reason}; data.strict is on, so any unreadable file fails the step")


def _skip(report: CorpusReport, source: str, reason: str, strict: bool) -> None:
    if strict:
        raise strict_error(source, reason)
    report.skip_file(source, reason)


def _raw_documents(
    root: Path, files: Iterable[Path], limits: Limits, report: CorpusReport, strict: bool
) -> Iterator[tuple[_Raw, str]]:
    for source in _sources(root, files, report, strict):
        label = format_label(source)
        report.files_by_format[label] += 1
        try:
            for item in read_source(source, limits):
                if isinstance(item, RecordSkip):
                    if strict:
                        raise CorpusError(f"{source.name} record {item.key}: {item.reason}; data.strict is on")
                    report.dropped["unreadable_record"] += 1
                    report.record(source.name, document_id(source.name, item.key), "skipped_record", item.reason)
                    continue
                key, text, fmt = item
                fmt = f"{fmt}.gz" if source.compressed else fmt
                yield _Raw(document_id(source.name, key), source.name, fmt), text
        except CorpusError:
            raise  # strict mode's own failure (a ValueError too), not a read error
        except READ_ERRORS as exc:
            _skip(report, source.name, error_reason(exc), strict)  # never the parser's text: it quotes the input


def document_batches(raw: Iterator[tuple[object, str]]) -> Iterator[tuple[list, list[str]]]:
    metas: list[_Raw] = []
    texts: list[str] = []
    size = 0
    for meta, text in raw:
        metas.append(meta)
        texts.append(text)
        size += len(text)
        if len(texts) >= _BATCH_DOCS or size >= _BATCH_CHARS:
            yield metas, texts
            metas, texts, size = [], [], 0
    if texts:
        yield metas, texts


def cleaned_batches(batches: Iterator[tuple[list, list[str]]], settings: CleanSettings, num_proc: int):
    if num_proc == 1:
        for metas, texts in batches:
            yield metas, clean_batch(texts, settings)
        return
    # Pool.imap would read every batch ahead into its task queue; apply_async with a bounded window keeps
    # at most 2 batches per worker in flight, which is what bounds memory. gc.freeze keeps the workers'
    # garbage collector off the objects inherited from this process, so it does not dirty (and copy) their
    # pages: without it a long-running worker slowly duplicates the parent's heap.
    gc.freeze()
    with multiprocessing.get_context("fork").Pool(num_proc) as pool:
        pending: deque = deque()
        for metas, texts in batches:
            pending.append((metas, pool.apply_async(clean_batch, (texts, settings))))
            if len(pending) >= 2 * num_proc:
                metas_done, result = pending.popleft()
                yield metas_done, result.get()
        while pending:
            metas_done, result = pending.popleft()
            yield metas_done, result.get()
    gc.unfreeze()


def read_limits(data: DataConfig) -> Limits:
    return Limits(data.max_document_bytes, data.max_file_bytes, tuple(data.text_fields), tuple(data.csv_columns))


def clean_settings(data: DataConfig) -> CleanSettings:
    return CleanSettings(
        data.min_chars, data.min_alnum_fraction, data.redact_emails, data.near_duplicate_threshold < 1.0
    )


@contextmanager
def corpus_sources(corpus: str) -> Iterator[tuple[Path, list[Path], list[Path]]]:
    """`resolve_sources` for the length of a block; the local copy of an s3:// corpus goes when it ends."""
    root, files, links = resolve_sources(corpus)
    try:
        yield root, files, links
    finally:
        if open_storage(corpus).local_path is None:
            shutil.rmtree(root, ignore_errors=True)  # the raw download, secrets and all


def iter_documents(data: DataConfig, report: CorpusReport) -> Iterator[Document]:
    """Clean documents of the corpus in a stable order; drops, skips and redactions go to `report`."""
    root, files, links = resolve_sources(data.corpus)
    try:
        for link in links:
            _skip(report, file_name(root, link), LINK_REASON, data.strict)
        yield from _clean_documents(root, files, data, report)
    finally:
        if open_storage(data.corpus).local_path is None:
            # The raw download of an s3:// corpus, secrets and all, goes as soon as reading ends or fails.
            shutil.rmtree(root, ignore_errors=True)


def _clean_documents(root: Path, files: list[Path], data: DataConfig, report: CorpusReport) -> Iterator[Document]:
    limits, settings = read_limits(data), clean_settings(data)
    index = DuplicateIndex(data.near_duplicate_threshold)
    raw = _raw_documents(root, files, limits, report, data.strict)
    for metas, cleaned in cleaned_batches(document_batches(raw), settings, data.num_proc or os.cpu_count() or 1):
        for meta, doc in zip(metas, cleaned, strict=True):
            if doc.redactions:
                report.redactions.update(doc.redactions)
                report.redacted_documents += 1
                counts = ", ".join(f"{kind}={n}" for kind, n in sorted(doc.redactions.items()))
                report.record(meta.source, meta.doc_id, "redacted", counts)
            reason = doc.drop_reason
            if reason is None:
                duplicate = index.check_and_add(meta.doc_id, doc.digest, doc.signature)
                if duplicate is not None:
                    reason = f"{duplicate[0]} of {duplicate[1]}"
            if reason is not None:
                report.dropped[reason.split(" ", 1)[0]] += 1
                report.record(meta.source, meta.doc_id, "dropped", reason)
                continue
            report.kept += 1
            report.kept_chars += len(doc.text)
            report.documents_by_format[meta.format] += 1
            yield Document(meta.doc_id, doc.text)


def load_corpus(data: DataConfig) -> tuple[list[Document], CorpusReport]:
    """All clean documents of a corpus in memory (for tests and small corpora) and the report."""
    report = CorpusReport()
    documents = list(iter_documents(data, report))
    if not documents:
        raise empty_corpus_error(data, report)
    return documents, report


def empty_corpus_error(data: DataConfig, report: CorpusReport) -> CorpusError:
    return CorpusError(
        f"data.corpus = {data.corpus!r} left no documents after cleaning "
        f"(dropped: {dict(report.dropped) or 'none'}; skipped files: {report.skipped_files[:3]}); "
        f"check the files or lower data.min_chars ({data.min_chars})"
    )
