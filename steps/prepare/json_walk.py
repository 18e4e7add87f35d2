"""A JSON text walked token by token, building nothing it is not asked for (`steps.prepare.json_records`).

`events` yields (kind, value) per token like a SAX parser, iteratively (any nesting depth), with scalars
decoded by the standard library's C scanner; `map_fields` and `leaves` keep only the scalars of wanted fields,
`skip` passes over a value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from json.decoder import JSONDecodeError, scanstring

_SCALAR = json.JSONDecoder().scan_once  # the C scanner: numbers, true/false/null, NaN/Infinity
_BLANK = re.compile(r"[ \t\n\r]*")

START_MAP, END_MAP, START_ARRAY, END_ARRAY, KEY, SCALAR = range(6)
_STARTS = (START_MAP, START_ARRAY)
_ENDS = (END_MAP, END_ARRAY)

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
            yield (START_MAP if char == "{" else START_ARRAY), None
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


def skip(first: int, stream: Iterator[tuple[int, object]]) -> None:
    """Pass over the value that starts with event `first`, building nothing."""
    if first not in _STARTS:
        return
    depth = 1
    for kind, _ in stream:
        if kind in _STARTS:
            depth += 1
        elif kind in _ENDS:
            depth -= 1
            if depth == 0:
                return


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
