"""The two ways prepare reads JSON (issue 31, item 5) give the same documents: `json.loads` where its memory is
bounded, the walk that builds nothing where it is not; and the walk has no nesting limit."""

from __future__ import annotations

import json

import pytest

from steps.prepare.json_records import _loads_bounded, json_documents, loaded_documents, walked_documents
from tests.support.corpus_files import STIX_BUNDLE, prose

FIELDS = ("title", "text")
CASES = {
    "records": [{"title": "T", "text": prose(1), "id": 7, "meta": {"x": [1, {}]}}, {"text": prose(2)}, "bare", 5],
    "list and map fields": [{"text": ["a", {"b": "c", "d": None}, 3, True], "title": {"k": 1.5}}],
    "empty and falsy": [{"text": ""}, {"text": 0}, {"text": None}, {"text": []}, {"text": False}, {}],
    "duplicate keys": '[{"text": "first", "text": "second"}]',
    "escapes and surrogates": '[{"text": "tab\\t nul\\u0000 lone\\ud800 pair\\ud83d\\ude00 quote\\""}]',
    "numbers": '[{"text": 1e400}, {"text": -0.0}, {"text": NaN}, {"text": 12345678901234567890}]',
    "stix": STIX_BUNDLE,
    "stix oddities": {
        "objects": [
            {"id": "a--1", "description": "d", "kill_chain_phases": [{"phase_name": None}, {"phase_name": "x"}, "y"]},
            {"description": ["p", {"q": "r"}], "name": None, "aliases": ["a", 2]},
            {"type": None, "id": 5, "description": "z", "pattern": {"k": "v"}},
            "not an object",
        ],
        "type": "bundle",
    },
    "map not a bundle": {"type": "report", "objects": [{"description": "x"}], "text": "kept"},
    "skipped values with brackets in strings": [
        {"junk": ["]", "{", '"[', [[[]]] * 200, {"a": "}"}, "\\"], "text": "after", "more": [{}] * 300},
        {"text": "next"},
    ],
    "top scalar": '"just a string"',
    "top empty": "[]",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loads_and_walk_give_the_same_documents(name: str) -> None:
    case = CASES[name]
    text = case if isinstance(case, str) else json.dumps(case)
    walked = list(walked_documents(text, FIELDS))
    assert walked == list(loaded_documents(json.loads(text), FIELDS))
    assert list(json_documents(text, FIELDS)) == walked


def test_dense_structure_is_walked_and_deep_nesting_has_no_limit(monkeypatch) -> None:
    from steps.prepare import json_records

    monkeypatch.setattr(json_records, "_LOADS_FLOOR_BYTES", 0)  # small texts here stand for large ones
    dense = '{"text": "kept", "junk": [' + "{}," * 100_000 + "{}]}"
    assert not _loads_bounded(dense) and _loads_bounded(json.dumps([{"text": prose(3, 300)}] * 50))
    assert list(json_documents(dense, FIELDS)) == [("0", "kept", "json")]
    deep = '{"text": "deep", "junk": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert list(json_documents(deep, FIELDS)) == [("0", "deep", "json")]
    with pytest.raises(RecursionError):
        json.loads(deep)


@pytest.mark.parametrize("text", ["[1,]", '{"a" 1}', '{"a": 1', "[1] 2", '["unterminated', "{'a': 1}", ""])
def test_malformed_json_fails_as_json_loads_does(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as walked:
        list(walked_documents(text, FIELDS))
    assert walked.value.msg == expected.value.msg
