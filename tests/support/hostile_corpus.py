"""Issue 31's hostile corpus for the whole flow: issue 13's bad inputs, every hostile file of the readers' tests,
every credential format redaction must catch, a threat report whose indicators must survive, and text in the
encodings real exports use, all in one folder (tests/flow/test_bad_corpus_flow.py runs the flow on it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.support import hostile_files as hostile
from tests.support.bad_corpus import BadCorpus, write_bad_corpus
from tests.support.corpus_files import prose
from tests.support.secret_formats import FORMATS, REPORT_INDICATORS, THREAT_REPORT


@dataclass
class HostileCorpus(BadCorpus):
    indicators: list[str] = field(default_factory=list)
    """Strings that must reach the training data as they are (indicators of compromise, not secrets)."""
    read_phrases: list[str] = field(default_factory=list)
    """Phrases of files in other encodings that must reach the training data as text."""


LIMITS = {"max_archive_members": 400, "max_archive_depth": 2}
"""Archive limits the flow test sets, low enough for small files to trip them (the bad corpus's many.zip of good
documents has 300 members)."""


def write_hostile_corpus(corpus: Path, max_file_bytes: int, max_document_bytes: int) -> HostileCorpus:
    bad = write_bad_corpus(corpus, max_file_bytes, max_document_bytes)
    found = HostileCorpus(bad.secrets, skipped=dict(bad.skipped), skipped_records=dict(bad.skipped_records))
    # (hostile.SURROGATE_SECRET is a word of its record's text, which is kept: it stands for what a reader's
    # exception would have quoted, which the readers' unit tests check; here it is ordinary training text.)
    found.secrets += [hostile.STIX_ID_SECRET, hostile.MEMBER_NAME_SECRET]
    # Readers: each file is read, or skipped with its reason, and none stops the run.
    hostile.lone_surrogate_jsonl(corpus / "surrogate.jsonl", 120_000)
    hostile.stix_with_null_phase_and_no_ids(corpus / "bundle.json")
    (corpus / "overflow.pdf").write_bytes(hostile.OVERFLOW_PDF)
    found.skipped["overflow.pdf"] = "broken PDF (OverflowError)"
    hostile.overlapping_zip(corpus / "overlap.zip", entries=300, member_bytes=256 << 10)  # within the member count
    found.skipped["overlap.zip"] = "overlapping entries"
    hostile.wide_zip(corpus / "wide.zip", members=LIMITS["max_archive_members"] + 10, member_bytes=256)
    found.skipped["wide.zip"] = "more than data.max_archive_members"
    hostile.nested_zip(corpus / "outer.zip", depth=LIMITS["max_archive_depth"] + 1)
    found.skipped["outer.zip!inner-1.zip!inner-2.zip"] = "nested deeper than data.max_archive_depth"
    hostile.odd_members_zip(corpus / "odd.zip")
    hostile.shared_stream_pdf(corpus / "shared.pdf", pages=5, content_bytes=1_200_000)
    found.skipped["shared.pdf"] = "bytes of page content"
    hostile.random_binary(corpus / "noise.txt")
    found.skipped["noise.txt"] = "not text"
    hostile.deep_jsonl(corpus / "deep.jsonl")
    hostile.huge_csv_field(corpus / "huge.csv", 512 << 10)
    hostile.nul_bytes_files(corpus)
    found.skipped["nul-field.csv"] = "binary content (NUL bytes)"
    found.read_phrases += [hostile.utf16_powershell(corpus / "processes.txt")]
    found.read_phrases += [hostile.windows_1252(corpus / "notes-1252.md")]
    # Redaction: every format in a document of its own, between prose, and a threat report whose IOCs stay.
    for k, (name, sample) in enumerate(sorted(FORMATS.items())):
        (corpus / "leaks" / f"{name}.md").parent.mkdir(exist_ok=True)
        (corpus / "leaks" / f"{name}.md").write_text(f"{prose(2000 + k)}\n\n{sample.text}\n\n{prose(2100 + k)}\n")
        found.secrets += list(sample.secrets)
    (corpus / "threat-report.md").write_text(f"{prose(2200)}\n\n{THREAT_REPORT}\n\n{prose(2201)}\n")
    found.indicators += list(REPORT_INDICATORS)
    return found
