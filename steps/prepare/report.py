"""What reading a corpus kept, dropped and changed: counts for the card, one JSONL row per event."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from steps.results import CorpusReportSummary, DuplicateCounts, SkippedFile

_SKIPPED_FILES_ON_CARD = 50
_EXAMPLES_PER_REASON = 3
_REASON_CHARS = 100
# Detail follows a colon (`unreadable CSV: <parser message>`) or a semicolon (`...; it has [<header>]`).
_DETAIL = re.compile(r"[:;]")


def reason_kind(reason: str) -> str:
    """A skip reason without its detail, which may quote the input: `bad JSON: Expecting ...` → `bad JSON`.

    (What the console shows; the card and report.jsonl keep the whole reason.)
    """
    return _DETAIL.split(reason, maxsplit=1)[0].strip()[:_REASON_CHARS] or "unknown"


@dataclass
class CorpusReport:
    """What was read, kept, dropped and changed. Counts for the card; one JSONL row per event in `rows`.

    A row has the source, the document id, the action and the reason; a redaction row names the secret
    types and counts, never the secret.
    """

    rows: IO[str] | None = None
    files_by_format: Counter = field(default_factory=Counter)
    documents_by_format: Counter = field(default_factory=Counter)
    documents_by_encoding: Counter = field(default_factory=Counter)
    """Kept documents by the text encoding prepare decoded them from (not PDF or XML, which parsers decode)."""
    dropped: Counter = field(default_factory=Counter)
    redactions: Counter = field(default_factory=Counter)
    redacted_documents: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    skipped_file_count: int = 0
    skipped_by_kind: Counter = field(default_factory=Counter)
    """Skipped files per `reason_kind`, with the first few paths of each in `skipped_examples`."""
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    kept: int = 0
    kept_chars: int = 0
    on_event: Callable[[CorpusReport], None] | None = None
    """Called after each recorded event and `tick`: where progress lines come from."""

    def tick(self) -> None:
        if self.on_event is not None:
            self.on_event(self)

    def record(self, source: str, doc_id: str, action: str, reason: str) -> None:
        if self.rows is not None:
            self.rows.write(json.dumps({"source": source, "doc_id": doc_id, "action": action, "reason": reason}) + "\n")
        self.tick()

    def skip_file(self, source: str, reason: str) -> None:
        self.skipped_file_count += 1
        self.dropped["unreadable_file"] += 1
        kind = reason_kind(reason)
        self.skipped_by_kind[kind] += 1
        examples = self.skipped_examples.setdefault(kind, [])
        if len(examples) < _EXAMPLES_PER_REASON:
            examples.append(source)
        if len(self.skipped_files) < _SKIPPED_FILES_ON_CARD:
            self.skipped_files.append((source, reason))
        self.record(source, source, "skipped_file", reason)

    def summary(self) -> CorpusReportSummary:
        return CorpusReportSummary(
            files_by_format=dict(self.files_by_format),
            documents_by_format=dict(self.documents_by_format),
            documents_by_encoding=dict(self.documents_by_encoding),
            dropped=dict(self.dropped),
            duplicates=DuplicateCounts(exact=self.dropped["exact_duplicate"], near=self.dropped["near_duplicate"]),
            redactions=dict(self.redactions),
            redacted_documents=self.redacted_documents,
            skipped_files=[SkippedFile(path=p, reason=r) for p, r in self.skipped_files],
            skipped_file_count=self.skipped_file_count,
            kept_documents=self.kept,
            kept_chars=self.kept_chars,
        )
