"""Text out of one corpus file, whatever its format, with a bounded read.

A file (or a zip member) is a `Source`; `read_source` yields `(key, text, format, encoding)` for
each document in it, or `RecordSkip` for a record it had to leave out (an
over-long line, a malformed JSON line or CSV row). A whole file that cannot be read raises
`SkipFile` with the reason. Nothing larger than the configured limits is ever
held in memory: whole-file reads stop one byte past the limit, what a compressed file or zip
member expands to is bounded by `max_file_bytes` (XML files too), and a document longer than
`max_document_bytes` is left out whatever format it came from. Reasons never quote the input
(`steps.prepare.read_guard`). Text is decoded from the encoding `steps.prepare.text_encoding` finds, JSON
is walked without being built (`steps.prepare.json_records`), and what a zip archive may expand to in all is
bounded by `steps.prepare.archives`.
"""

from __future__ import annotations

import dataclasses
import gzip
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from json import JSONDecodeError
from pathlib import Path
from typing import IO, NamedTuple

import trafilatura

from steps.formats.cwe_catalogue import looks_like_cwe_catalogue
from steps.prepare.archives import ArchiveLimits
from steps.prepare.csv_rows import csv_rows
from steps.prepare.cwe_documents import cwe_documents
from steps.prepare.json_records import json_documents, record_line_text
from steps.prepare.pdf_text import pdf_text
from steps.prepare.read_guard import SkipFile, bounded, utf8_length
from steps.prepare.source_names import UniqueKeys, without_surrogates
from steps.prepare.text_encoding import decode_text, utf8_stream

FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".pdf": "pdf",
    ".xml": "xml",
}
__all__ = ["Extracted", "Limits", "RecordSkip", "SkipFile", "Source", "open_zip", "read_source", "zip_members"]


class Extracted(NamedTuple):
    key: str
    """Where the document is inside its file ("" for a one-document file)."""
    text: str
    format: str
    encoding: str | None = None
    """The text encoding its bytes were decoded from (`utf-8`, `utf-16`, `cp1252`); None where a parser decoded
    them (PDF, XML)."""


class RecordSkip(NamedTuple):
    key: str
    reason: str


@dataclass(frozen=True)
class Limits:
    max_document_bytes: int
    max_file_bytes: int
    text_fields: tuple[str, ...]
    csv_columns: tuple[str, ...]
    archives: ArchiveLimits | None = None
    pdf_content_per_byte: int = 4
    redact_emails: bool = False


@dataclass(frozen=True)
class Source:
    """A file on disk, or one member of a zip archive on disk (read through the archive opened once)."""

    name: str
    """How reports and document ids name it: the path below the corpus root, `archive.zip!member` inside a zip."""
    path: Path
    member: zipfile.ZipInfo | None = None
    archive: zipfile.ZipFile | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def inner_name(self) -> str:
        return self.member.filename if self.member else self.path.name

    @property
    def compressed(self) -> bool:
        return self.inner_name.lower().endswith(".gz")

    @property
    def format(self) -> str:
        """Format from the name's suffix, a `.gz` looked through; `unknown` when not supported."""
        name = self.inner_name.lower().removesuffix(".gz")
        return FORMATS.get(Path(name).suffix, "unknown")

    @property
    def expands(self) -> bool:
        """Whether its content is decompressed on reading, so that a small file can become a large stream."""
        return self.compressed or self.member is not None

    def open(self, limit: int | None = None) -> IO[bytes]:
        """A binary stream of the content, decompressed when gzipped; SkipFile past `limit` bytes when given."""
        if self.member is None:
            handle: IO[bytes] = open(self.path, "rb")
        elif self.member.flag_bits & 0x1:
            raise SkipFile("encrypted zip member that needs a password")
        else:
            handle = self.archive.open(self.member)
        handle = gzip.GzipFile(fileobj=handle) if self.compressed else handle
        if limit is None:
            return handle
        what = "decompressed" if self.expands else "read"
        return bounded(handle, limit, f"larger than data.max_file_bytes ({limit} bytes) when {what}; skipped whole")


def open_zip(path: Path) -> zipfile.ZipFile:
    """The archive, opened once for all its members (each open reads the whole member list again)."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SkipFile(f"broken zip archive ({type(exc).__name__})") from None


def zip_members(archive: zipfile.ZipFile, path: Path, name: str) -> list[Source]:
    """One source per file member of an open zip archive."""
    return [Source(f"{name}!{m.filename}", path, m, archive) for m in archive.infolist() if not m.is_dir()]


def read_bounded(source: Source, limit: int, field: str) -> bytes:
    """All of a source's bytes, or SkipFile as soon as it is known to be larger than `limit`."""
    with source.open() as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise SkipFile(f"larger than data.{field} ({limit} bytes); raise it to include this file")
    if not data.strip():
        raise SkipFile("empty file")
    return data


def _html_main_text(html: str) -> str:
    return trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True) or ""


def _json_documents(data: bytes, limits: Limits) -> Iterator[Extracted]:
    text, encoding = decode_text(data)
    del data  # the text is what is walked: the bytes need not stay
    try:
        for key, doc, fmt in json_documents(text, limits.text_fields):
            yield Extracted(key, doc, fmt, encoding)
    except JSONDecodeError as exc:  # msg is the json module's own fixed text, never the input
        raise SkipFile(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _drain(source: Source, limits: Limits) -> None:
    """Decompress a record file once without keeping it, so that one expanding past max_file_bytes is
    skipped whole before any of its records is used (instead of after a million of them)."""
    if source.expands:
        with source.open(limits.max_file_bytes) as handle:
            while handle.read(1 << 20):
                pass


def _jsonl_documents(source: Source, limits: Limits) -> Iterator[Extracted | RecordSkip]:
    limit = limits.max_document_bytes
    _drain(source, limits)
    with source.open(limits.max_file_bytes if source.expands else None) as raw:
        handle, encoding = utf8_stream(raw)
        for index, line in enumerate(iter(lambda: handle.readline(limit + 1), b"")):
            if len(line) > limit and not line.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the over-long line without holding it
                yield RecordSkip(str(index), f"line longer than data.max_document_bytes ({limit} bytes)")
                continue
            if not line.strip():
                continue
            try:
                text = record_line_text(line.decode("utf-8"), limits.text_fields)
            except JSONDecodeError as exc:  # msg is the json module's own fixed text, never the input
                yield RecordSkip(str(index), f"malformed JSON line {index + 1}: {exc.msg} at column {exc.colno}")
                continue
            except UnicodeDecodeError as exc:
                yield RecordSkip(str(index), f"JSON line {index + 1} is not UTF-8 text (byte {exc.start})")
                continue
            yield Extracted(str(index), text, "jsonl", encoding)


def _csv_documents(source: Source, limits: Limits) -> Iterator[Extracted | RecordSkip]:
    _drain(source, limits)
    with source.open(limits.max_file_bytes if source.expands else None) as raw:
        handle, encoding = utf8_stream(raw)
        for key, text, reason in csv_rows(handle, limits.csv_columns, limits.max_document_bytes):
            yield RecordSkip(key, reason) if reason is not None else Extracted(key, text, "csv", encoding)


def _cwe_xml_documents(source: Source, limits: Limits) -> Iterator[Extracted]:
    # Read twice (sniff, documents), each through the max_file_bytes bound, so a small .xml.gz cannot
    # expand into one huge tree; the entries are all parsed before the first document (`cwe_documents`).
    with source.open(limits.max_file_bytes) as handle:
        if not looks_like_cwe_catalogue(handle.read(4096)):
            raise SkipFile("XML that is not a CWE catalogue (the only XML format read)")
    with source.open(limits.max_file_bytes) as handle:
        for key, text in cwe_documents(handle):
            yield Extracted(key, text, "cwe_xml")


def read_source(source: Source, limits: Limits) -> Iterator[Extracted | RecordSkip]:
    """(key inside the file, raw text, format, encoding) per document; raises SkipFile for a file it cannot read.

    Where text enters prepare: a lone surrogate becomes U+FFFD in text and key alike, and keys are made safe
    and distinct (`steps.prepare.source_names`). A document longer than data.max_document_bytes is left
    out: a record as a RecordSkip, a one-document file (key "") as a SkipFile.
    """
    limit = limits.max_document_bytes
    keys = UniqueKeys(limits.redact_emails)
    for number, item in enumerate(_documents(source, limits)):
        if isinstance(item, RecordSkip):
            yield item._replace(key=keys(item.key, number))
            continue
        item = item._replace(key=keys(item.key, number), text=without_surrogates(item.text))
        if utf8_length(item.text) <= limit:
            yield item
        elif not item.key:
            raise SkipFile(f"text larger than data.max_document_bytes ({limit} bytes); raise it to include this file")
        else:
            yield RecordSkip(item.key, f"document larger than data.max_document_bytes ({limit} bytes)")


def _documents(source: Source, limits: Limits) -> Iterator[Extracted | RecordSkip]:
    fmt = source.format
    if fmt in ("text", "markdown", "rst"):
        text, encoding = decode_text(read_bounded(source, limits.max_document_bytes, "max_document_bytes"))
        yield Extracted("", text, fmt, encoding)
    elif fmt == "html":
        html, encoding = decode_text(read_bounded(source, limits.max_document_bytes, "max_document_bytes"))
        yield Extracted("", _html_main_text(html), fmt, encoding)
    elif fmt == "pdf":
        data = read_bounded(source, limits.max_file_bytes, "max_file_bytes")
        yield Extracted("", pdf_text(data, limits.max_document_bytes, limits.pdf_content_per_byte), fmt)
    elif fmt == "json":
        yield from _json_documents(read_bounded(source, limits.max_file_bytes, "max_file_bytes"), limits)
    elif fmt == "jsonl":
        yield from _jsonl_documents(source, limits)
    elif fmt == "csv":
        yield from _csv_documents(source, limits)
    elif fmt == "xml":
        yield from _cwe_xml_documents(source, limits)
    else:
        raise SkipFile(f"unsupported format; supported suffixes: {sorted(FORMATS)}, also .gz and .zip")
