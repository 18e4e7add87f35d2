"""Instruction files as conversations: JSONL (or JSON) records in the chat format or as prompt/response pairs.

A record is `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}` or
`{"prompt": "...", "response": "...", "system": "..." (optional)}`; other fields are ignored. A conversation
is an optional system message, then user and assistant turns in turn, ending with the assistant's. Files
are read through the corpus's guards (`steps.prepare.extract`'s bounded sources, `.gz` and `.zip` members,
limits from `data.max_document_bytes` and `data.max_file_bytes`): a file that cannot be read raises
`SkipFile`, a bad record is yielded as a `RecordSkip` with its reason, and no reason quotes the input
(a record may hold a secret).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from steps.prepare.extract import Limits, RecordSkip, SkipFile, Source, decode_text, read_bounded
from steps.prepare.read_guard import utf8_length

ROLES = ("system", "user", "assistant")
INSTRUCTION_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}


class RecordError(ValueError):
    """Why a record is not a conversation; the message is ours, never the record's text."""


@dataclass(frozen=True)
class RawConversation:
    key: str
    """Where the record is in its file: the line (JSONL) or the array index (JSON), from 0."""
    messages: list[dict[str, str]]


def instruction_format(source: Source) -> str | None:
    """`jsonl` or `json` from the name (a `.gz` looked through); None for anything else."""
    name = source.inner_name.lower().removesuffix(".gz")
    return next((fmt for suffix, fmt in INSTRUCTION_FORMATS.items() if name.endswith(suffix)), None)


def _message(number: int, value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise RecordError(f"message {number} is not a JSON object")
    role, content = value.get("role"), value.get("content")
    if role not in ROLES:
        raise RecordError(f"message {number} has a role other than system, user or assistant")
    if not isinstance(content, str):
        raise RecordError(f"message {number} ({role}) has no text: its content must be a string")
    return {"role": role, "content": content}


def _check_turns(messages: list[dict[str, str]]) -> None:
    if not messages:
        raise RecordError("'messages' is empty")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for number, message in enumerate(messages, start=1):
        if message["role"] == "system" and number > 1:
            raise RecordError(f"message {number} is a system message; only the first message may be one")
    if not turns:
        raise RecordError("only a system message: no user or assistant turn")
    offset = len(messages) - len(turns)
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise RecordError(
                f"message {index + offset + 1} is a {message['role']} turn where a {expected} turn belongs; "
                "turns must alternate user, assistant"
            )
    if turns[-1]["role"] != "assistant":
        raise RecordError("the last message is not the assistant's: there is no answer to learn")


def conversation_messages(record: object) -> list[dict[str, str]]:
    """The messages of a record in either format, checked; RecordError with the reason otherwise."""
    if not isinstance(record, dict):
        raise RecordError(f"the record is a JSON {type(record).__name__}, not an object")
    if "messages" in record:
        if not isinstance(record["messages"], list):
            raise RecordError("'messages' is not a list")
        messages = [_message(number, value) for number, value in enumerate(record["messages"], start=1)]
    elif "prompt" in record or "response" in record:
        for field in ("prompt", "response"):
            if not isinstance(record.get(field), str):
                raise RecordError(f"'{field}' is missing or not a string")
        system = record.get("system")
        if system is not None and not isinstance(system, str):
            raise RecordError("'system' is not a string")
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages += [
            {"role": "user", "content": record["prompt"]},
            {"role": "assistant", "content": record["response"]},
        ]
    else:
        raise RecordError("no 'messages' list and no 'prompt' and 'response' strings")
    _check_turns(messages)
    return messages


def _records_of_lines(source: Source, limits: Limits) -> Iterator[tuple[str, object] | RecordSkip]:
    limit = limits.max_document_bytes
    if source.expands:
        # Decompress once without keeping anything: a file that expands past the limit is skipped whole,
        # before any of its records is used (as the corpus's JSONL reader does).
        with source.open(limits.max_file_bytes) as handle:
            while handle.read(1 << 20):
                pass
    with source.open(limits.max_file_bytes if source.expands else None) as handle:
        for index, line in enumerate(iter(lambda: handle.readline(limit + 1), b"")):
            if len(line) > limit and not line.endswith(b"\n"):
                while (rest := handle.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass  # the rest of the over-long line, never held whole
                yield RecordSkip(str(index), f"line longer than data.max_document_bytes ({limit} bytes)")
                continue
            if not line.strip():
                continue
            try:
                yield str(index), json.loads(line)
            except json.JSONDecodeError as exc:  # msg is the json module's own fixed text, never the input
                yield RecordSkip(str(index), f"malformed JSON line {index + 1}: {exc.msg} at column {exc.colno}")
            except UnicodeDecodeError as exc:
                yield RecordSkip(str(index), f"JSON line {index + 1} is not UTF-8 text (byte {exc.start})")


def _records_of_array(source: Source, limits: Limits) -> Iterator[tuple[str, object] | RecordSkip]:
    text, _ = decode_text(read_bounded(source, limits.max_file_bytes, "max_file_bytes"))
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SkipFile(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    for index, record in enumerate(loaded if isinstance(loaded, list) else [loaded]):
        if utf8_length(json.dumps(record, ensure_ascii=False)) > limits.max_document_bytes:
            yield RecordSkip(str(index), f"record larger than data.max_document_bytes ({limits.max_document_bytes})")
        else:
            yield str(index), record


def read_conversations(source: Source, limits: Limits) -> Iterator[RawConversation | RecordSkip]:
    """Each record of an instruction file as a conversation, or a RecordSkip saying why it is not one.

    Raises SkipFile for a file that is not an instruction file or cannot be read as a whole.
    """
    fmt = instruction_format(source)
    if fmt is None:
        raise SkipFile(f"not an instruction file; supported suffixes: {sorted(INSTRUCTION_FORMATS)}, also .gz, .zip")
    records = _records_of_lines(source, limits) if fmt == "jsonl" else _records_of_array(source, limits)
    for item in records:
        if isinstance(item, RecordSkip):
            yield item
            continue
        key, record = item
        try:
            yield RawConversation(key, conversation_messages(record))
        except RecordError as exc:
            yield RecordSkip(key, f"not a conversation: {exc}")
