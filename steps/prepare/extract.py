"""Text out of one corpus file, whatever its format, with a bounded read.

A file (or a zip member) is a `Source`; `read_source` yields `(key, text, format)` for
each document in it, or `RecordSkip` for a record it had to leave out (an
over-long line, a malformed JSON line). A whole file that cannot be read raises
`SkipFile` with the reason. Nothing larger than the configured limits is ever
held in memory: whole-file reads stop one byte past the limit.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

import pyarrow as pa
import trafilatura
from pyarrow import csv
from pypdf import PdfReader
from pypdf.errors import PyPdfError

from steps.formats.cwe_catalogue import entry_names, looks_like_cwe_catalogue
from steps.prepare.cwe_documents import cwe_documents

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
_STIX_TEXT_FIELDS = ("name", "aliases", "description", "pattern", "kill_chain_phases", "x_mitre_detection")
_BINARY_SNIFF = 8192

logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns per broken object; the report says what matters


class SkipFile(Exception):
    """A file (or zip member) left out as a whole; the message is the reason."""


class Extracted(NamedTuple):
    key: str
    """Where the document is inside its file ("" for a one-document file)."""
    text: str
    format: str


class RecordSkip(NamedTuple):
    key: str
    reason: str


@dataclass(frozen=True)
class Limits:
    max_document_bytes: int
    max_file_bytes: int
    text_fields: tuple[str, ...]
    csv_columns: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """A file on disk, or one member of a zip archive on disk."""

    name: str
    """How reports and document ids name it: the path below the corpus root, `archive.zip!member` inside a zip."""
    path: Path
    member: str | None = None

    @property
    def inner_name(self) -> str:
        return self.member or self.path.name

    @property
    def compressed(self) -> bool:
        return self.inner_name.lower().endswith(".gz")

    @property
    def format(self) -> str:
        """Format from the name's suffix, a `.gz` looked through; `unknown` when not supported."""
        name = self.inner_name.lower().removesuffix(".gz")
        return FORMATS.get(Path(name).suffix, "unknown")

    def open(self) -> IO[bytes]:
        """A binary stream of the content, decompressed when gzipped."""
        if self.member is None:
            handle: IO[bytes] = open(self.path, "rb")
        else:
            handle = zipfile.ZipFile(self.path).open(self.member)
        return gzip.GzipFile(fileobj=handle) if self.compressed else handle


def expand_zip(path: Path, name: str) -> list[Source]:
    """One source per file member of a zip archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m.filename for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise SkipFile(f"broken zip archive: {exc}") from None
    return [Source(f"{name}!{member}", path, member) for member in members]


def read_bounded(source: Source, limit: int, field: str) -> bytes:
    """All of a source's bytes, or SkipFile as soon as it is known to be larger than `limit`."""
    try:
        with source.open() as handle:
            data = handle.read(limit + 1)
    except RuntimeError as exc:  # zipfile: "File ... is encrypted, password required"
        raise SkipFile(f"unreadable zip member: {exc}") from None
    if len(data) > limit:
        raise SkipFile(f"larger than data.{field} ({limit} bytes); raise it to include this file")
    if not data.strip():
        raise SkipFile("empty file")
    return data


def decode_text(data: bytes) -> str:
    """UTF-8 text, or SkipFile naming why the bytes are not text."""
    if b"\x00" in data[:_BINARY_SNIFF]:
        raise SkipFile("binary content (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}") from None


def _html_main_text(html: str) -> str:
    return trafilatura.extract(html, include_comments=False, include_tables=True, favor_recall=True) or ""


def _pdf_text(data: bytes) -> str:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("encrypted PDF that needs a password")
        return "\n".join(page.extract_text() or "" for page in reader.pages)
    except SkipFile:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError, OSError) as exc:
        # pypdf raises a variety of types on damaged files; any of them means "this PDF cannot be read".
        raise SkipFile(f"broken PDF: {type(exc).__name__}: {exc}"[:300]) from None


def _record_text(record: object, fields: tuple[str, ...]) -> str:
    if not isinstance(record, dict):
        return ""
    return "\n".join(str(record[f]) for f in fields if record.get(f))


def _stix_object_text(obj: dict) -> str:
    lines = [f"{obj.get('type', 'object')}: {obj.get('name', obj.get('id', ''))}"]
    for field in _STIX_TEXT_FIELDS[1:]:
        value = obj.get(field)
        if isinstance(value, list):
            value = ", ".join(v.get("phase_name", str(v)) if isinstance(v, dict) else str(v) for v in value)
        if value:
            lines.append(f"{field.replace('_', ' ')}: {value}" if field != "description" else str(value))
    return "\n".join(lines)


def _json_documents(data: bytes, limits: Limits) -> Iterator[Extracted]:
    try:
        loaded = json.loads(decode_text(data))
    except json.JSONDecodeError as exc:
        raise SkipFile(f"malformed JSON: {exc}") from None
    if isinstance(loaded, dict) and loaded.get("type") == "bundle" and isinstance(loaded.get("objects"), list):
        # STIX 2.1: one document per object that describes something.
        for obj in loaded["objects"]:
            if isinstance(obj, dict) and obj.get("description"):
                yield str(obj.get("id")), _stix_object_text(obj), "stix"
        return
    for index, record in enumerate(loaded if isinstance(loaded, list) else [loaded]):
        yield str(index), _record_text(record, limits.text_fields), "json"


def _jsonl_documents(source: Source, limits: Limits) -> Iterator[Extracted | RecordSkip]:
    limit = limits.max_document_bytes
    with source.open() as handle:
        for index, line in enumerate(iter(lambda: handle.readline(limit + 1), b"")):
            if len(line) > limit and not line.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the over-long line without holding it
                yield RecordSkip(str(index), f"line longer than data.max_document_bytes ({limit} bytes)")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield RecordSkip(str(index), f"malformed JSON line: {exc}"[:200])
                continue
            yield str(index), _record_text(record, limits.text_fields), "jsonl"


def _csv_documents(source: Source, limits: Limits) -> Iterator[Extracted]:
    with source.open() as handle:
        try:
            reader = csv.open_csv(handle, read_options=csv.ReadOptions(block_size=1 << 22))
        except pa.ArrowInvalid as exc:
            raise SkipFile(f"unreadable CSV: {exc}") from None
        columns = [c for c in limits.csv_columns if c in reader.schema.names]
        if not columns:
            raise SkipFile(f"CSV has none of data.csv_columns {list(limits.csv_columns)}; it has {reader.schema.names}")
        row = 0
        for batch in reader:
            values = [batch.column(c).cast(pa.string()).to_pylist() for c in columns]
            for cells in zip(*values, strict=True):
                yield str(row), "\n".join(c for c in cells if c), "csv"
                row += 1


def read_source(source: Source, limits: Limits) -> Iterator[Extracted | RecordSkip]:
    """(key inside the file, raw text, format) per document; raises SkipFile for a file it cannot read."""
    fmt = source.format
    if fmt in ("text", "markdown", "rst"):
        yield "", decode_text(read_bounded(source, limits.max_document_bytes, "max_document_bytes")), fmt
    elif fmt == "html":
        html = decode_text(read_bounded(source, limits.max_document_bytes, "max_document_bytes"))
        yield "", _html_main_text(html), fmt
    elif fmt == "pdf":
        yield "", _pdf_text(read_bounded(source, limits.max_file_bytes, "max_file_bytes")), fmt
    elif fmt == "json":
        yield from _json_documents(read_bounded(source, limits.max_file_bytes, "max_file_bytes"), limits)
    elif fmt == "jsonl":
        yield from _jsonl_documents(source, limits)
    elif fmt == "csv":
        yield from _csv_documents(source, limits)
    elif fmt == "xml":
        with source.open() as handle:
            if not looks_like_cwe_catalogue(handle.read(4096)):
                raise SkipFile("XML that is not a CWE catalogue (the only XML format read)")
        with source.open() as handle:
            names = entry_names(handle)
        with source.open() as handle:
            for key, text in cwe_documents(handle, names):
                yield key, text, "cwe_xml"
    else:
        raise SkipFile(f"unsupported format; supported suffixes: {sorted(FORMATS)}, also .gz and .zip")
