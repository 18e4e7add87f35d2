"""Read a corpus into clean, deduplicated documents, accounting for every drop.

Sources: `cwe` (the CWE catalogue bundled with `cwe2`), a folder (recursive), a
glob, or an s3:// prefix. Formats: plain text and Markdown, JSON and JSONL
(text taken from the configured fields) and the CWE catalogue XML.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
import tempfile
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from steps.config import DEFAULT_CORPUS
from steps.cwe_catalogue import bundled_catalogue_path, looks_like_cwe_catalogue, read_cwe_catalogue
from steps.storage import download_prefix

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
JSON_SUFFIXES = {".json", ".jsonl"}
XML_SUFFIXES = {".xml"}
SUPPORTED = TEXT_SUFFIXES | JSON_SUFFIXES | XML_SUFFIXES


class CorpusError(ValueError):
    """A corpus that cannot be read or leaves nothing to train on."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    """Stable identifier: the source path, plus a record or weakness id inside it."""
    text: str


@dataclass
class CorpusReport:
    """What was read, kept and dropped, and why (counts only)."""

    files_by_format: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    kept: int = 0
    kept_chars: int = 0

    def to_dict(self) -> dict:
        return {
            "files_by_format": dict(self.files_by_format),
            "dropped": dict(self.dropped),
            "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped_files],
            "kept_documents": self.kept,
            "kept_chars": self.kept_chars,
        }


def resolve_sources(corpus: str) -> tuple[Path, list[Path]]:
    """The folder that document ids are relative to, and the files a corpus spec names, in a stable order."""
    if corpus == DEFAULT_CORPUS:
        catalogue = bundled_catalogue_path()
        return catalogue.parent, [catalogue]
    if corpus.startswith("s3://"):
        folder = download_prefix(corpus, Path(tempfile.mkdtemp(prefix="tune-corpus-")))
        return resolve_sources(str(folder))
    path = Path(corpus).expanduser()
    if path.is_dir():
        root, files = path, [p for p in path.rglob("*") if p.is_file()]
    elif path.is_file():
        root, files = path.parent, [path]
    else:
        # Ids are relative to the fixed part of the pattern, before its first wildcard.
        fixed = Path(re.split(r"[*?\[]", corpus, maxsplit=1)[0] or ".")
        root = fixed if fixed.is_dir() else fixed.parent
        files = [Path(p) for p in glob.glob(corpus, recursive=True) if Path(p).is_file()]
    if not files:
        raise CorpusError(f"data.corpus = {corpus!r} names no files: give a folder, a glob, an s3:// prefix or 'cwe'")
    return root, sorted(files)


def _records_from_json(path: Path, name: str, text_fields: list[str]) -> Iterator[tuple[str, str]]:
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in raw.splitlines() if line.strip()]
    else:
        loaded = json.loads(raw)
        records = loaded if isinstance(loaded, list) else [loaded]
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            continue
        parts = [str(record[f]) for f in text_fields if record.get(f)]
        yield f"{name}#{index}", "\n".join(parts)


def read_file(path: Path, name: str, text_fields: list[str]) -> Iterator[tuple[str, str]]:
    """(doc_id, raw text) pairs from one file named `name` in ids; raises on unreadable content."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        yield name, path.read_text(encoding="utf-8")
    elif suffix in JSON_SUFFIXES:
        yield from _records_from_json(path, name, text_fields)
    elif suffix in XML_SUFFIXES:
        with open(path, "rb") as handle:
            if not looks_like_cwe_catalogue(handle.read(4096)):
                raise ValueError("XML that is not a CWE catalogue")
        for weakness_id, text in read_cwe_catalogue(path):
            yield f"{name}#{weakness_id}", text
    else:
        raise ValueError(f"unsupported format {suffix or '(no suffix)'}; supported: {sorted(SUPPORTED)}")


def normalise(text: str) -> str:
    """NFKC, no control characters, runs of spaces folded, at most one blank line in a row."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip()


def read_documents(
    root: Path, files: Iterable[Path], text_fields: list[str], min_chars: int, report: CorpusReport
) -> Iterator[Document]:
    """Clean documents from files, without exact duplicates; drops are counted in `report`.

    Document ids are paths relative to `root`, so the split does not depend on where the corpus lives.
    """
    seen: set[bytes] = set()
    for path in files:
        report.files_by_format[path.suffix.lower().lstrip(".") or "none"] += 1
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        try:
            for doc_id, raw in read_file(path, name, text_fields):
                text = normalise(raw)
                if len(text) < min_chars:
                    report.dropped["too_short"] += 1
                    continue
                digest = hashlib.sha256(text.encode()).digest()
                if digest in seen:
                    report.dropped["exact_duplicate"] += 1
                    continue
                seen.add(digest)
                report.kept += 1
                report.kept_chars += len(text)
                yield Document(doc_id, text)
        except (UnicodeDecodeError, json.JSONDecodeError, ET.ParseError, ValueError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:200]
            report.skipped_files.append((str(path), reason))
            report.dropped["unreadable_file"] += 1


def load_corpus(corpus: str, text_fields: list[str], min_chars: int) -> tuple[list[Document], CorpusReport]:
    """All clean documents of a corpus and the report of what was dropped."""
    report = CorpusReport()
    root, files = resolve_sources(corpus)
    documents = list(read_documents(root, files, text_fields, min_chars, report))
    if not documents:
        raise CorpusError(
            f"data.corpus = {corpus!r} left no documents after cleaning "
            f"(dropped: {dict(report.dropped) or 'none'}; skipped files: {report.skipped_files[:3]}); "
            f"check the files or lower data.min_chars ({min_chars})"
        )
    return documents, report
