"""What prepare prints: progress, files read and skipped, documents kept and dropped, redactions, tokens and
blocks per side; never document text or a secret."""

from __future__ import annotations

import contextlib
import io

import pytest

from steps.config import DataConfig
from steps.prepare.pipeline import run_prepare
from steps.results import PrepareSummary
from steps.runtime.progress_clock import ProgressClock
from tests.support.corpus_files import CANARIES, CANARY_VALUES, prose, write_bad_files, write_good_corpus

SMALL = {"min_chars": 40, "vocab_size": 300, "block_size": 32, "num_proc": 1, "validation_fraction": 0.3}


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> tuple[str, PrepareSummary, dict[str, str]]:
    root = tmp_path_factory.mktemp("console")
    corpus = root / "corpus"
    write_good_corpus(corpus)
    skipped = write_bad_files(corpus / "bad")
    # A CSV row the parser rejects, quoting it in its error message: the console must not repeat it.
    (corpus / "bad" / "leaky.csv").write_text(f'text\n"{prose(80, 20)}"\n{CANARIES["password"]},extra,"cols"\n')
    (corpus / "copy.txt").write_text(prose(1))  # an exact duplicate of notes.txt
    (corpus / "short.txt").write_text("too short to keep")
    (corpus / "leak.txt").write_text(prose(70) + "\n" + "\n".join(CANARIES.values()) + "\n" + prose(71))
    console = io.StringIO()
    with contextlib.redirect_stdout(console):  # what the step's log shows (capsys is per test)
        summary = run_prepare(DataConfig(corpus=str(corpus), **SMALL), root / "out", progress_every_s=0.0)
    return console.getvalue(), summary, {f"bad/{name}": reason for name, reason in skipped.items()}


def test_files_read_and_skipped_are_named_by_reason(printed) -> None:
    out, summary, skipped = printed
    assert f"prepare: opened {sum(summary.report.files_by_format.values())} files in " in out
    assert f"prepare: skipped {summary.report.skipped_file_count} files" in out
    for path in skipped:
        line = next((line for line in out.splitlines() if path in line), None)
        assert line is not None and line.startswith("prepare:   "), (path, out)
    # The malformed CSV row is dropped on its own (its file's good row is kept), counted without its text.
    assert "unreadable_record 1" in out


def test_documents_dropped_and_redacted_are_counted_by_type(printed) -> None:
    out, summary, _ = printed
    assert f"{summary.report.kept_documents} kept" in out
    assert "exact_duplicate 1" in out and "too_short 1" in out
    redacted = next(line for line in out.splitlines() if line.startswith("prepare: redacted"))
    for kind in CANARIES:
        assert f" {kind} " in f"{redacted} " or f" {kind}," in redacted, (kind, redacted)


def test_tokens_and_blocks_per_side_and_progress(printed) -> None:
    out, summary, _ = printed
    for side in ("train", "validation"):
        expected = (
            f"prepare: {side}: {getattr(summary.documents, side):,} documents, {getattr(summary.tokens, side):,} "
            f"tokens, {getattr(summary.blocks, side):,} blocks of 32 tokens"
        )
        assert expected in out
    assert "prepare: reading: " in out and "prepare: encoding: " in out
    assert f"{summary.prompts} evaluation prompts" in out


def test_the_console_holds_no_document_text_and_no_secret(printed) -> None:
    out, _, _ = printed
    assert not any(value in out for value in CANARY_VALUES)
    for seed in (1, 70, 71, 80):
        words = prose(seed).split()
        assert " ".join(words[2:7]) not in out  # five words of the document in a row
    assert all(line.startswith("prepare: ") for line in out.splitlines())


def test_progress_is_due_once_per_interval() -> None:
    ticks = iter([0.0, 3.0, 9.9, 10.0, 12.0, 20.5])
    progress = ProgressClock(10.0, clock=lambda: next(ticks))
    assert [progress.due() for _ in range(5)] == [False, False, True, False, True]
    ticks = iter([0.0, 0.0, 3.0, 10.5])
    at_once = ProgressClock(10.0, clock=lambda: next(ticks), at_once=True)
    assert [at_once.due() for _ in range(3)] == [True, False, True]
