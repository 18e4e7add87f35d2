"""What prepare prints: progress while it reads and encodes, and a summary a person can act on.

Counts, types, file names and the kind of each skip reason only (`steps.prepare.report.reason_kind`):
never document text, nor a parser's detail, which may quote the input it choked on and so a secret.
The whole reasons are in the dataset's report.jsonl.
"""

from __future__ import annotations

from collections import Counter

from steps.prepare.report import CorpusReport
from steps.runtime.progress_clock import ProgressClock

PREFIX = "prepare:"


def say(line: str) -> None:
    print(f"{PREFIX} {line}", flush=True)


def _n(number: int, noun: str) -> str:
    """`1 file`, `2,048 files`."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _counts(counter: Counter | dict) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in sorted(counter.items()) if count) or "none"


def documents_seen(report: CorpusReport) -> int:
    return report.kept + sum(n for reason, n in report.dropped.items() if reason != "unreadable_file")


def reading_progress(report: CorpusReport, progress: ProgressClock) -> None:
    """One progress line of the read-clean-dedupe pass, when one is due."""
    if not progress.due():
        return
    opened = sum(report.files_by_format.values())
    say(
        f"reading: {_n(opened, 'file')} opened, {_n(documents_seen(report), 'document')} ({report.kept:,} kept), "
        f"{_n(report.skipped_file_count, 'file')} skipped, "
        f"{report.kept_chars / 1e6:,.1f} M characters kept, {progress.elapsed():.0f} s"
    )


def reading_summary(report: CorpusReport, corpus: str) -> None:
    """Files read and skipped by reason, documents kept and dropped by reason, redactions by type."""
    say(f"opened {_n(sum(report.files_by_format.values()), 'file')} in {corpus}: {_counts(report.files_by_format)}")
    if report.skipped_file_count:
        say(f"skipped {_n(report.skipped_file_count, 'file')} (every file and its full reason: report.jsonl):")
        for kind, count in sorted(report.skipped_by_kind.items()):
            examples = report.skipped_examples[kind]
            say(f"  {kind}: {count:,} ({', '.join(examples)}{', ...' if count > len(examples) else ''})")
    dropped = {reason: n for reason, n in report.dropped.items() if reason != "unreadable_file"}
    say(
        f"documents: {documents_seen(report):,} read, {report.kept:,} kept "
        f"({_counts(report.documents_by_format)}); dropped {sum(dropped.values()):,}: {_counts(dropped)}"
    )
    if report.documents_by_encoding:
        say(f"text encodings of kept documents: {_counts(report.documents_by_encoding)}")
    if report.redactions:
        secrets = _n(sum(report.redactions.values()), "secret")
        say(f"redacted {secrets} in {_n(report.redacted_documents, 'document')}: {_counts(report.redactions)}")
    else:
        say("redacted nothing: no secrets found")


def split_summary(documents: dict[str, int], tokens: dict[str, int], blocks: dict[str, int], block_size: int) -> None:
    for side in ("train", "validation"):
        say(
            f"{side}: {_n(documents[side], 'document')}, {tokens[side]:,} tokens, "
            f"{_n(blocks[side], 'block')} of {block_size} tokens"
        )
