"""prepare's instruction data: conversations read, cleaned, redacted, deduplicated and split, with a report.

`load_instructions` gives the conversations in memory (files: `steps.prepare.instructions_read`;
`cwe`: `steps.prepare.instructions_cwe`); `steps.prepare.instructions_write` tokenizes them into the
instruction dataset folder. Each message goes through the corpus's own clean-up (`normalise`) and secret
redaction (`redact`): a credential in an answer is as dangerous as in a document. Every file skipped and
every record dropped or redacted is a row of the report, with the reason and never the text.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from steps.config import DataConfig
from steps.config.instruct import DEFAULT_INSTRUCTIONS, InstructConfig
from steps.formats.cwe_catalogue import bundled_catalogue_path, read_weaknesses
from steps.formats.dataset import document_id
from steps.formats.instruction_folder import Question
from steps.prepare.clean import normalise
from steps.prepare.corpus import (
    LINK_REASON,
    CorpusError,
    corpus_sources,
    file_name,
    read_limits,
    strict_error,
)
from steps.prepare.extract import RecordSkip, Source, open_zip, zip_members
from steps.prepare.instructions_cwe import cwe_instructions
from steps.prepare.instructions_read import instruction_format, read_conversations
from steps.prepare.read_guard import error_reason
from steps.prepare.redact import redact
from steps.prepare.report import CorpusReport
from steps.prepare.split import split_by_document


@dataclass(frozen=True)
class Conversation:
    conversation_id: str
    """`<file>#<record>` (a record's line or index), or `cwe#CWE-79/<kind>/<phrasing>`."""
    messages: list[dict[str, str]]
    format: str


@dataclass
class InstructionSet:
    train: list[Conversation]
    validation: list[Conversation]
    questions: list[Question]
    report: CorpusReport
    held_out_subjects: list[str] = field(default_factory=list)


def _sources(root, path) -> list[Source]:
    name = file_name(root, path)
    if path.name.lower().endswith(".zip"):
        return zip_members(open_zip(path), path, name)
    return [Source(name, path)]


def read_instruction_files(spec: str, data: DataConfig, report: CorpusReport) -> Iterator[Conversation]:
    """The conversations of a folder, glob or s3:// prefix of instruction files, before clean-up.

    Unreadable files and bad records are in `report` (with `data.strict`, the first one raises CorpusError).
    """
    limits = read_limits(data)
    with corpus_sources(spec) as (root, files, links):
        for link in links:
            report.skip_file(file_name(root, link), LINK_REASON)
        for path in files:
            try:
                sources = _sources(root, path)
            except CorpusError:
                raise
            except Exception as exc:  # any reader's failure skips its file, named by type (as the corpus's readers)
                _skip_file(report, file_name(root, path), error_reason(exc), data.strict)
                continue
            for source in sources:
                yield from _conversations_of(source, limits, report, data.strict)


def _skip_file(report: CorpusReport, name: str, reason: str, strict: bool) -> None:
    if strict:
        raise strict_error(name, reason)
    report.skip_file(name, reason)


def _conversations_of(source: Source, limits, report: CorpusReport, strict: bool) -> Iterator[Conversation]:
    fmt = instruction_format(source) or "unknown"
    label = f"{fmt}.gz" if source.compressed else fmt
    try:
        # Streamed: a .gz is decompressed once to its end before its first record (`read_conversations`), so
        # a damaged one is skipped whole; a plain file failing half-way keeps the records read before.
        for number, item in enumerate(read_conversations(source, limits)):
            if number == 0:
                report.files_by_format[label] += 1
            conversation_id = document_id(source.name, item.key)
            if isinstance(item, RecordSkip):
                if strict:
                    raise CorpusError(f"{source.name} record {item.key}: {item.reason}; data.strict is on")
                report.dropped["malformed_record"] += 1
                report.record(source.name, conversation_id, "skipped_record", item.reason)
                continue
            yield Conversation(conversation_id, item.messages, label)
    except CorpusError:
        raise
    except Exception as exc:  # as the corpus's readers: one file never stops the others
        _skip_file(report, source.name, error_reason(exc), strict)


def clean_messages(messages: list[dict[str, str]], redact_emails: bool) -> tuple[list[dict[str, str]], Counter]:
    """Each message normalised and redacted as corpus documents are; the counts of secrets replaced."""
    cleaned, counts = [], Counter()
    for message in messages:
        text, found = redact(normalise(message["content"]), redact_emails)
        cleaned.append({"role": message["role"], "content": text})
        counts.update(found)
    return cleaned, counts


def content_key(messages: list[dict[str, str]]) -> str:
    """The same text in the same roles, whatever its case and spacing: what makes two conversations duplicates."""
    folded = [[m["role"], " ".join(m["content"].casefold().split())] for m in messages]
    return hashlib.sha256(json.dumps(folded).encode()).hexdigest()


def clean_and_dedupe(conversations: Iterator[Conversation], data: DataConfig, report: CorpusReport):
    """Conversations cleaned and redacted, empty messages and exact duplicates dropped; (conversation, key) pairs."""
    first_of: dict[str, str] = {}
    for conversation in conversations:
        source = conversation.conversation_id.split("#", 1)[0]
        messages, counts = clean_messages(conversation.messages, data.redact_emails)
        if counts:
            report.redactions.update(counts)
            report.redacted_documents += 1
            report.record(
                source,
                conversation.conversation_id,
                "redacted",
                ", ".join(f"{k}={n}" for k, n in sorted(counts.items())),
            )
        empty = next((number for number, m in enumerate(messages, start=1) if not m["content"]), None)
        if empty is not None:
            _drop(
                report,
                source,
                conversation.conversation_id,
                "empty_message",
                f"message {empty} is empty after clean-up",
            )
            continue
        key = content_key(messages)
        if key in first_of:
            _drop(
                report, source, conversation.conversation_id, "exact_duplicate", f"exact_duplicate of {first_of[key]}"
            )
            continue
        first_of[key] = conversation.conversation_id
        report.kept += 1
        report.kept_chars += sum(len(m["content"]) for m in messages)
        report.documents_by_format[conversation.format] += 1
        yield Conversation(conversation.conversation_id, messages, conversation.format), key


def _drop(report: CorpusReport, source: str, conversation_id: str, kind: str, reason: str) -> None:
    report.dropped[kind] += 1
    report.record(source, conversation_id, "dropped", reason)


def _file_questions(validation: list[Conversation], count: int, seed: int) -> list[Question]:
    """Held-out conversations as questions: everything before the last answer, which is the reference."""
    picked = sorted(random.Random(seed).sample(range(len(validation)), min(count, len(validation))))
    return [
        Question(
            question_id=validation[i].conversation_id,
            kind="conversation",
            subject=validation[i].conversation_id,
            messages=validation[i].messages[:-1],
            reference=validation[i].messages[-1]["content"],
            short_answer=validation[i].messages[-1]["content"],
        )
        for i in picked
    ]


def load_instructions(
    instruct: InstructConfig, data: DataConfig, report: CorpusReport, not_held_out: frozenset[str] = frozenset()
) -> InstructionSet:
    """instruct.instructions read, cleaned, deduplicated and split: by conversation for files, by weakness
    for `cwe` (`not_held_out`: weakness keys never held out, see `cwe_instructions`)."""
    spec = instruct.instructions
    if spec is None:
        raise ValueError("instruct.instructions is empty: there is no instruction data to prepare")
    if spec == DEFAULT_INSTRUCTIONS:
        generated = cwe_instructions(
            read_weaknesses(bundled_catalogue_path()),
            instruct.validation_fraction,
            instruct.seed,
            instruct.cwe_phrasings,
            instruct.eval_questions,
            instruct.choices,
            not_held_out,
        )
        report.files_by_format["cwe"] += 1
        sides = []
        for side in (generated.train, generated.validation):
            kept = clean_and_dedupe((Conversation(i, m, "cwe") for i, m in side), data, report)
            sides.append([conversation for conversation, _ in kept])
        return InstructionSet(sides[0], sides[1], generated.questions, report, generated.held_out)
    kept = list(clean_and_dedupe(read_instruction_files(spec, data, report), data, report))
    if len(kept) < 2:
        raise CorpusError(
            f"instruct.instructions = {spec!r} left {len(kept)} conversation(s) after reading and clean-up "
            f"(dropped: {dict(report.dropped) or 'none'}; skipped files: {report.skipped_file_count}); "
            "at least 2 are needed to hold one out"
        )
    # Split by content, not by position: the same conversation lands on the same side wherever it sits.
    train_at, validation_at = split_by_document([key for _, key in kept], instruct.validation_fraction, instruct.seed)
    train = [kept[i][0] for i in train_at]
    validation = [kept[i][0] for i in validation_at]
    return InstructionSet(
        train, validation, _file_questions(validation, instruct.eval_questions, instruct.seed), report
    )
