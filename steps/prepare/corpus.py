"""A corpus's sources and the pieces of reading them that prepare's phases share.

Sources: `cwe` (the CWE catalogue bundled with `cwe2`), a folder (recursive), a
glob, or an s3:// prefix, in a stable order; formats are in `steps.prepare.extract`.
Clean-up runs in `num_proc` worker processes on batches of documents, with a bounded
number of batches in flight, so memory does not grow with the corpus. What is kept
is decided in `steps.prepare.shard_decide`; `steps.prepare.documents` gives the kept
documents in memory.
"""

from __future__ import annotations

import gc
import glob
import multiprocessing
import os
import re
import shutil
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from steps.config import DEFAULT_CORPUS, DataConfig
from steps.formats.cwe_catalogue import bundled_catalogue_path
from steps.prepare.archives import ArchiveLimits
from steps.prepare.clean import CleanSettings, clean_batch
from steps.prepare.corpus_files import folder_files, outside_links
from steps.prepare.extract import Limits, Source
from steps.prepare.report import CorpusReport
from steps.runtime.storage import open_storage

__all__ = ["CorpusError", "corpus_sources", "resolve_sources"]

_BATCH_DOCS = 256
_BATCH_CHARS = 4 << 20
LINK_REASON = "symbolic link, not followed (it can point outside the corpus folder); copy the file in instead"


class CorpusError(ValueError):
    """A corpus that cannot be read or leaves nothing to train on."""


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


def strict_error(source: str, reason: str) -> CorpusError:
    return CorpusError(f"{source}: {reason}; data.strict is on, so any unreadable file fails the step")


def document_batches(raw: Iterator[tuple[object, str]]) -> Iterator[tuple[list, list[str]]]:
    metas: list = []
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


def _cleaning_failed(metas: list, exc: BaseException) -> CorpusError:
    """What a failure while cleaning a batch says: the batch's files and the exception's type, never its text (a
    UnicodeEncodeError holds its whole document, other exceptions may quote one: a secret)."""
    names = sorted({str(getattr(meta, "source", meta)) for meta in metas})
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return CorpusError(f"cleaning the documents of {shown} failed ({type(exc).__name__})")


def cleaned_batches(batches: Iterator[tuple[list, list[str]]], settings: CleanSettings, num_proc: int):
    if num_proc == 1:
        for metas, texts in batches:
            try:
                cleaned = clean_batch(texts, settings)
            except Exception as exc:
                raise _cleaning_failed(metas, exc) from None
            yield metas, cleaned
        return
    # Pool.imap would read every batch ahead into its task queue; apply_async with a bounded window keeps
    # at most 2 batches per worker in flight, which is what bounds memory. gc.freeze keeps the workers'
    # garbage collector off the objects inherited from this process, so it does not dirty (and copy) their
    # pages: without it a long-running worker slowly duplicates the parent's heap.
    gc.freeze()
    with multiprocessing.get_context("fork").Pool(num_proc) as pool:
        pending: deque = deque()

        def done() -> tuple[list, list]:
            metas_done, result = pending.popleft()
            try:
                return metas_done, result.get()
            except Exception as exc:
                raise _cleaning_failed(metas_done, exc) from None

        for metas, texts in batches:
            pending.append((metas, pool.apply_async(clean_batch, (texts, settings))))
            if len(pending) >= 2 * num_proc:
                yield done()
        while pending:
            yield done()
    gc.unfreeze()


def reading_processes(data: DataConfig) -> int:
    """Processes that read and clean at once: `data.num_proc`, else the cores this process may run on (not the
    machine's: a cpuset can hold fewer)."""
    if data.num_proc:
        return data.num_proc
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS has no affinity to ask
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def archive_limits(data: DataConfig) -> ArchiveLimits:
    return ArchiveLimits(data.max_archive_bytes, data.max_archive_members, data.max_archive_depth, data.max_file_bytes)


def read_limits(data: DataConfig) -> Limits:
    return Limits(
        data.max_document_bytes,
        data.max_file_bytes,
        tuple(data.text_fields),
        tuple(data.csv_columns),
        archive_limits(data),
        data.pdf_content_per_byte,
        data.redact_emails,
    )


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


def empty_corpus_error(data: DataConfig, report: CorpusReport) -> CorpusError:
    return CorpusError(
        f"data.corpus = {data.corpus!r} left no documents after cleaning "
        f"(dropped: {dict(report.dropped) or 'none'}; skipped files: {report.skipped_files[:3]}); "
        f"check the files or lower data.min_chars ({data.min_chars})"
    )
