"""A JSON text walked token by token, building nothing it is not asked for (`steps.prepare.json_records`).

`events` yields (kind, value) per token like a SAX parser, iteratively (any nesting depth), with scalars
decoded by the standard library's C scanner; `map_fields` and `leaves` keep only the scalars of wanted fields.
`skip` passes over a value without a token per element: sent `SKIP` right after a container opens, the walk
jumps to its end, counting brackets in C (numpy) between strings and stepping over each string with the
scanner. A skipped value is checked for well-formed strings and balanced brackets only, as skipping
readers do: the rest of its grammar is not (`[1,,2]` inside an unwanted field passes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from json.decoder import JSONDecodeError, scanstring

import numpy as np

_SCALAR = json.JSONDecoder().scan_once  # the C scanner: numbers, true/false/null, NaN/Infinity
_BLANK = re.compile(r"[ \t\n\r]*")

START_MAP, END_MAP, START_ARRAY, END_ARRAY, KEY, SCALAR, SKIPPED = range(7)
_STARTS = (START_MAP, START_ARRAY)
_ENDS = (END_MAP, END_ARRAY)
SKIP = object()
"""Sent to `events` right after it yields a START: it jumps past the container and yields SKIPPED."""
_BRACKETS = re.compile(r"[\[\]{}]")
_DEPTH_STEP = np.zeros(128, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1
_NUMPY_CHARS = 256  # shorter stretches between strings are cheaper to scan with the regex
_CHUNK_CHARS = 1 << 20  # bounds numpy's work arrays


def _close_in(text: str, start: int, end: int, depth: int) -> tuple[int | None, int]:
    """(the position just past the bracket that closes depth `depth` in text[start:end], or None; the depth at
    `end` when none does). The stretch is outside strings, so valid JSON has only ASCII there."""
    if end - start < _NUMPY_CHARS:
        for match in _BRACKETS.finditer(text, start, end):
            depth += 1 if match.group() in "[{" else -1
            if depth == 0:
                return match.end(), 0
        return None, depth
    for low in range(start, end, _CHUNK_CHARS):
        high = min(low + _CHUNK_CHARS, end)
        try:
            codes = np.frombuffer(text[low:high].encode("ascii"), dtype=np.uint8)
        except UnicodeEncodeError as exc:
            raise JSONDecodeError("Expecting value", text, low + exc.start) from None
        levels = np.cumsum(_DEPTH_STEP[codes], dtype=np.int64) + depth
        closed = np.flatnonzero(levels == 0)
        if closed.size:
            return low + int(closed[0]) + 1, 0
        depth = int(levels[-1])
    return None, depth


def _after_container(text: str, at: int) -> int:
    """The position just past the container whose opening bracket ends just before `at`."""
    depth = 1
    while True:
        quote = text.find('"', at)
        end = len(text) if quote < 0 else quote
        closed, depth = _close_in(text, at, end, depth)
        if closed is not None:
            return closed
        if quote < 0:
            raise JSONDecodeError("Expecting value", text, len(text))
        _, at = scanstring(text, quote + 1)


def _key(text: str, at: int) -> tuple[str, int]:
    if text[at : at + 1] != '"':
        raise JSONDecodeError("Expecting property name enclosed in double quotes", text, at)
    key, at = scanstring(text, at + 1)
    at = _BLANK.match(text, at).end()
    if text[at : at + 1] != ":":
        raise JSONDecodeError("Expecting ':' delimiter", text, at)
    return key, _BLANK.match(text, at + 1).end()


def events(text: str) -> Iterator[tuple[int, object]]:
    """(kind, value) for each token of one JSON value, like a SAX parser; JSONDecodeError where it is malformed."""
    blank = _BLANK.match
    at = blank(text, 0).end()
    in_map: list[bool] = []  # one entry per open container: the walk's only state
    while True:
        char = text[at : at + 1]
        if char == "{" or char == "[":
            command = yield (START_MAP if char == "{" else START_ARRAY), None
            if command is SKIP:
                at = _after_container(text, at + 1)
                yield SKIPPED, None  # what `send` returns
            else:
                at = blank(text, at + 1).end()
                if text[at : at + 1] == ("}" if char == "{" else "]"):
                    yield (END_MAP if char == "{" else END_ARRAY), None
                    at += 1
                else:
                    in_map.append(char == "{")
                    if char == "{":
                        key, at = _key(text, at)
                        yield KEY, key
                    continue
        elif char == '"':
            value, at = scanstring(text, at + 1)
            yield SCALAR, value
        else:
            try:
                value, at = _SCALAR(text, at)
            except StopIteration as stop:
                raise JSONDecodeError("Expecting value", text, stop.value) from None
            yield SCALAR, value
        while True:  # after a value: a comma, the end of its container(s), or the end of the text
            at = blank(text, at).end()
            if not in_map:
                if at != len(text):
                    raise JSONDecodeError("Extra data", text, at)
                return
            char = text[at : at + 1]
            if char == ",":
                at = blank(text, at + 1).end()
                if in_map[-1]:
                    key, at = _key(text, at)
                    yield KEY, key
                break
            if char == ("}" if in_map[-1] else "]"):
                yield (END_MAP if in_map.pop() else END_ARRAY), None
                at += 1
                continue
            raise JSONDecodeError("Expecting ',' delimiter", text, at)


def skip(first: int, stream) -> None:
    """Pass over the value that starts with event `first` (the `events` generator's last), building nothing."""
    if first in _STARTS:
        stream.send(SKIP)


def leaves(first: tuple[int, object], stream: Iterator[tuple[int, object]], under: str | None = None):
    """The value's scalar (a scalar value's own), or the list of its non-null scalars (those directly under
    map key `under` only, when given) for a container."""
    kind, value = first
    if kind == SCALAR:
        return value
    found: list[str] = []
    keys: list[str | None] = [None]
    depth = 1
    for kind, value in stream:
        if kind == SCALAR:
            if value is not None and (under is None or keys[-1] == under):
                found.append(value if isinstance(value, str) else str(value))
        elif kind == KEY:
            keys[-1] = value
        elif kind in _STARTS:
            depth += 1
            keys.append(None)
        else:
            depth -= 1
            keys.pop()
            if depth == 0:
                return found
    return found


def map_fields(stream: Iterator[tuple[int, object]], wanted: tuple[str, ...], under: dict[str, str]) -> dict:
    """A map's wanted fields (after its START_MAP), each as `leaves` gives it; the rest skipped."""
    found: dict = {}
    for kind, value in stream:
        if kind == END_MAP:
            return found
        first = next(stream)
        if value in wanted:
            found[value] = leaves(first, stream, under.get(value))
        else:
            skip(first[0], stream)
    return found
