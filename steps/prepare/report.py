"""What reading a corpus kept, dropped and changed: counts for the card, one JSONL row per event."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import IO

from steps.results import CorpusReportSummary, DuplicateCounts, SkippedFile

_SKIPPED_FILES_ON_CARD = 50


@dataclass
class CorpusReport:
    """What was read, kept, dropped and changed. Counts for the card; one JSONL row per event in `rows`.

    A row has the source, the document id, the action and the reason; a redaction row names the secret
    types and counts, never the secret.
    """

    rows: IO[str] | None = None
    files_by_format: Counter = field(default_factory=Counter)
    documents_by_format: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)
    redactions: Counter = field(default_factory=Counter)
    redacted_documents: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    skipped_file_count: int = 0
    kept: int = 0
    kept_chars: int = 0

    def record(self, source: str, doc_id: str, action: str, reason: str) -> None:
        if self.rows is not None:
            self.rows.write(json.dumps({"source": source, "doc_id": doc_id, "action": action, "reason": reason}) + "\n")

    def skip_file(self, source: str, reason: str) -> None:
        self.skipped_file_count += 1
        self.dropped["unreadable_file"] += 1
        if len(self.skipped_files) < _SKIPPED_FILES_ON_CARD:
            self.skipped_files.append((source, reason))
        self.record(source, source, "skipped_file", reason)

    def summary(self) -> CorpusReportSummary:
        return CorpusReportSummary(
            files_by_format=dict(self.files_by_format),
            documents_by_format=dict(self.documents_by_format),
            dropped=dict(self.dropped),
            duplicates=DuplicateCounts(exact=self.dropped["exact_duplicate"], near=self.dropped["near_duplicate"]),
            redactions=dict(self.redactions),
            redacted_documents=self.redacted_documents,
            skipped_files=[SkippedFile(path=p, reason=r) for p, r in self.skipped_files],
            skipped_file_count=self.skipped_file_count,
            kept_documents=self.kept,
            kept_chars=self.kept_chars,
        )
