"""Documents out of JSON text, in memory bounded by the text, not by its structure.

`json.loads` builds every value: `[{},{},...]` grows to ~25 times its size (a 256 MiB file, ~6 GB per
reading process), and nesting deeper than the interpreter's recursion limit raises. Measured with
tracemalloc, what it allocates stays under `2 x len(text) + _BYTES_PER_TOKEN x tokens`, counting `,` `:` `[`
`{` as tokens (empty dicts 36 bytes a token, short strings 59, nested maps 77). So a text is parsed by
`json.loads` only where that estimate is at most `_LOADS_MULTIPLE` times the text (or `_LOADS_FLOOR_BYTES`):
records of real prose, nearly all JSON, at C speed. Denser text is walked instead: the structure is read
iteratively, scalars are decoded by the standard library's own C scanner (so strings, numbers and escapes,
lone surrogates included, decode exactly as `json.loads` decodes them), and only the wanted fields' text is
kept; everything else is passed over without being built. The walk holds the text, one stack entry per
open container and the kept text; it reads 0.4-14 MB/s where `json.loads` reads ~70 MB/s.

Either way the same documents come out (a unit test holds the two paths equal): a record's `data.text_fields`,
a STIX object's name, description and the like, a container's scalars one per line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from steps.prepare.json_walk import END_ARRAY, END_MAP, START_ARRAY, START_MAP, events, leaves, map_fields, skip

_BYTES_PER_TOKEN = 128  # above the most measured (77), for the kinds of value not measured
_LOADS_MULTIPLE = 6
_LOADS_FLOOR_BYTES = 64 << 20
STIX_FIELDS = ("type", "id", "name", "aliases", "description", "pattern", "kill_chain_phases", "x_mitre_detection")
_STIX_LINES = ("aliases", "description", "pattern", "kill_chain_phases", "x_mitre_detection")


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
            obj = map_fields(stream, STIX_FIELDS, {"kill_chain_phases": "phase_name"})
            if obj.get("description"):
                yield _stix_key(obj, index), stix_text(obj)
        else:
            skip(kind, stream)
        index += 1


def json_documents(text: str, text_fields: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """(key, text, format) of each document in one JSON value; JSONDecodeError if malformed (see
    `walked_documents`), parsed by `json.loads` where that is bounded."""
    if _loads_bounded(text):
        try:
            loaded = json.loads(text)
        except RecursionError:  # nested deeper than the interpreter allows: the walk has no such limit
            pass
        else:
            yield from loaded_documents(loaded, text_fields)
            return
    yield from walked_documents(text, text_fields)


def _loads_bounded(text: str) -> bool:
    """Whether `json.loads(text)` stays within `_LOADS_MULTIPLE` times the text (or the floor)."""
    tokens = text.count(",") + text.count(":") + text.count("[") + text.count("{")
    estimate = 2 * len(text) + _BYTES_PER_TOKEN * tokens
    return estimate <= max(_LOADS_MULTIPLE * len(text), _LOADS_FLOOR_BYTES)


def walked_documents(text: str, text_fields: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
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
            fields = map_fields(stream, text_fields, {}) if kind == START_MAP else skip(kind, stream) or {}
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
            fields[key] = leaves(first, stream)
        else:
            skip(first[0], stream)
    for _ in stream:
        pass
    if fields.get("type") == "bundle" and objects:
        for object_key, object_text in held:
            yield object_key, object_text, "stix"
        return
    yield "0", record_text(fields, text_fields), "json"


def record_line_text(text: str, text_fields: tuple[str, ...]) -> str:
    """The text of one JSON Lines record (its `text_fields`; empty when the line is not a map)."""
    if _loads_bounded(text):
        try:
            loaded = json.loads(text)
        except RecursionError:
            pass
        else:
            return record_text(_loaded_fields(loaded, text_fields, {}), text_fields)
    stream = events(text)
    kind, _ = next(stream)
    fields = map_fields(stream, text_fields, {}) if kind == START_MAP else (skip(kind, stream) or {})
    for _ in stream:
        pass
    return record_text(fields, text_fields)


def _children(container) -> Iterator[tuple[str | None, object]]:
    return iter(container.items()) if isinstance(container, dict) else ((None, item) for item in container)


def _loaded_leaves(value: object, under: str | None = None):
    """`json_walk.leaves` of a value `json.loads` built: the scalar, or a container's non-null scalars in order (those
    directly under map key `under` only, when given), iteratively."""
    if not isinstance(value, (dict, list)):
        return value
    found: list[str] = []
    pending = [_children(value)]
    while pending:
        for key, child in pending[-1]:
            if isinstance(child, (dict, list)):
                pending.append(_children(child))
                break
            if child is not None and (under is None or key == under):
                found.append(child if isinstance(child, str) else str(child))
        else:
            pending.pop()
    return found


def _loaded_fields(value: object, wanted: tuple[str, ...], under: dict[str, str]) -> dict:
    if not isinstance(value, dict):
        return {}
    return {name: _loaded_leaves(value[name], under.get(name)) for name in wanted if name in value}


def loaded_documents(loaded: object, text_fields: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """`walked_documents` of a value `json.loads` built."""
    if isinstance(loaded, list):
        for index, record in enumerate(loaded):
            yield str(index), record_text(_loaded_fields(record, text_fields, {}), text_fields), "json"
        return
    if isinstance(loaded, dict) and loaded.get("type") == "bundle" and isinstance(loaded.get("objects"), list):
        for index, item in enumerate(loaded["objects"]):
            obj = _loaded_fields(item, STIX_FIELDS, {"kill_chain_phases": "phase_name"})
            if obj.get("description"):
                yield _stix_key(obj, index), stix_text(obj), "stix"
        return
    yield "0", record_text(_loaded_fields(loaded, text_fields, {}), text_fields), "json"
