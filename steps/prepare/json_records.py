"""Documents out of JSON text without building the JSON: memory bounded by the text, not by its structure.

`json.loads` builds every value: `[{},{},...]` grows to ~25 times its size (a 256 MiB file, ~6 GB per
reading process), and nesting deeper than the interpreter's recursion limit raises. Here the structure is
walked iteratively, scalars are decoded by the standard library's own C scanner (so strings, numbers and
escapes, lone surrogates included, decode exactly as `json.loads` decodes them), and only the text of the
wanted fields is kept: a record's `data.text_fields`, a STIX object's name, description and the like.
Everything else is skipped without being built.

Memory while reading one JSON text: the text itself, the walk's stack (one entry per open container) and the
kept text, so at most about three times the file (one of bytes, one or up to four of str, the kept text).
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

STIX_FIELDS = ("type", "id", "name", "aliases", "description", "pattern", "kill_chain_phases", "x_mitre_detection")
_STIX_LINES = ("aliases", "description", "pattern", "kill_chain_phases", "x_mitre_detection")


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


def _skip(first: int, stream: Iterator[tuple[int, object]]) -> None:
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


def _leaves(first: tuple[int, object], stream: Iterator[tuple[int, object]], under: str | None = None):
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


def _fields(stream: Iterator[tuple[int, object]], wanted: tuple[str, ...], under: dict[str, str]) -> dict:
    """A map's wanted fields (after its START_MAP), each as `_leaves` gives it; the rest skipped."""
    fields: dict = {}
    for kind, value in stream:
        if kind == END_MAP:
            return fields
        first = next(stream)
        if value in wanted:
            fields[value] = _leaves(first, stream, under.get(value))
        else:
            _skip(first[0], stream)
    return fields


def field_text(value: object) -> str:
    """A field's text: a scalar as `str` gives it, a container's scalars one per line; empty for none."""
    if isinstance(value, list):
        return "\n".join(value)
    return str(value) if value else ""


def record_text(fields: dict, text_fields: tuple[str, ...]) -> str:
    return "\n".join(text for name in text_fields if fields.get(name) and (text := field_text(fields[name])))


def stix_text(obj: dict) -> str:
    """What a STIX object teaches: `type: name`, then its aliases, description, pattern and kill chain phases."""
    name = obj.get("name") if obj.get("name") is not None else obj.get("id")
    kind = obj.get("type") if obj.get("type") is not None else "object"
    lines = [f"{field_text(kind) or 'object'}: {field_text(name)}"]
    for field in _STIX_LINES:
        value = obj.get(field)
        text = ", ".join(value) if isinstance(value, list) else field_text(value)
        if text:
            lines.append(text if field == "description" else f"{field.replace('_', ' ')}: {text}")
    return "\n".join(lines)


def _stix_key(obj: dict, index: int) -> str:
    identifier = obj.get("id")
    return identifier if isinstance(identifier, str) and identifier else f"objects[{index}]"


def _stix_objects(stream: Iterator[tuple[int, object]]) -> Iterator[tuple[str, str]]:
    """(key, text) of each object in a bundle's `objects` array that has a description (after START_ARRAY)."""
    index = 0
    for kind, _ in stream:
        if kind == END_ARRAY:
            return
        if kind == START_MAP:
            obj = _fields(stream, STIX_FIELDS, {"kill_chain_phases": "phase_name"})
            if obj.get("description"):
                yield _stix_key(obj, index), stix_text(obj)
        else:
            _skip(kind, stream)
        index += 1


def json_documents(text: str, text_fields: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """(key, text, format) of each document in one JSON value: a STIX 2.1 bundle's described objects (`stix`),
    else each record of a top-level array, or the one top-level record (`json`); JSONDecodeError if malformed.

    A record's text is its `text_fields` joined, as `json.loads` then `str` would give them for scalars (a
    container's scalars one per line). Keys: the record's index, a STIX object's id (its position when it has
    none).
    """
    stream = events(text)
    kind, _ = next(stream)
    if kind == START_ARRAY:
        index = 0
        for kind, _ in stream:
            if kind == END_ARRAY:
                break
            fields = _fields(stream, text_fields, {}) if kind == START_MAP else _skip(kind, stream) or {}
            yield str(index), record_text(fields, text_fields), "json"
            index += 1
        for _ in stream:  # the rest is only checked: trailing data makes the file malformed, as json.loads says
            pass
        return
    if kind != START_MAP:
        for _ in stream:
            pass
        yield "0", "", "json"
        return
    # A map: a STIX bundle when `type` is "bundle" and `objects` an array, else one record. Objects met before
    # the type is known are kept (their text only) until the end of the map decides.
    fields: dict = {}
    held: list[tuple[str, str]] = []
    objects = False
    for kind, key in stream:
        if kind == END_MAP:
            break
        first = next(stream)
        if key == "objects" and first[0] == START_ARRAY:
            objects = True
            found = _stix_objects(stream)
            if fields.get("type") == "bundle":
                for object_key, object_text in found:
                    yield object_key, object_text, "stix"
            else:
                held.extend(found)
        elif key == "type" or key in text_fields:
            fields[key] = _leaves(first, stream)
        else:
            _skip(first[0], stream)
    for _ in stream:
        pass
    if fields.get("type") == "bundle" and objects:
        for object_key, object_text in held:
            yield object_key, object_text, "stix"
        return
    yield "0", record_text(fields, text_fields), "json"


def record_line_text(text: str, text_fields: tuple[str, ...]) -> str:
    """The text of one JSON Lines record (its `text_fields`; empty when the line is not a map)."""
    stream = events(text)
    kind, _ = next(stream)
    fields = _fields(stream, text_fields, {}) if kind == START_MAP else (_skip(kind, stream) or {})
    for _ in stream:
        pass
    return record_text(fields, text_fields)
