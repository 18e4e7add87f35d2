"""The embedded instruction data from the CWE catalogue: split by weakness, deterministic, and its held-out
questions answerable only from pretraining."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from steps.config import DataConfig
from steps.config.instruct import InstructConfig
from steps.formats.cwe_catalogue import Weakness, bundled_catalogue_path, read_weaknesses
from steps.prepare.instructions import load_instructions
from steps.prepare.instructions_cwe import EVAL_KINDS, QUESTIONS, cwe_instructions
from steps.prepare.report import CorpusReport


@pytest.fixture(scope="module")
def weaknesses() -> list[Weakness]:
    return list(read_weaknesses(bundled_catalogue_path()))


def test_held_out_weaknesses_are_never_in_the_training_conversations(weaknesses) -> None:
    generated = cwe_instructions(weaknesses, 0.05, 1234, 3, 64, 4)
    held = {w.key: w for w in weaknesses if w.key in set(generated.held_out)}
    assert 30 <= len(held) <= 80  # about 5% of the 938 usable weaknesses
    training_text = "\n".join(m["content"] for _, messages in generated.train for m in messages)
    # Neither the ID nor the name of a held-out weakness appears anywhere in what instruction tuning reads.
    assert not [key for key in held if re.search(re.escape(key) + r"\b", training_text)]
    assert not [w.name for w in held.values() if w.name in training_text]
    assert {cid.split("/")[0].removeprefix("cwe#") for cid, _ in generated.validation} == set(held)
    for question in generated.questions:
        assert question.subject in held and question.kind in EVAL_KINDS
        assert question.choices[question.answer_index] == question.reference
        assert len(set(question.choices)) == 4 and question.short_answer in question.reference
        # Only the reference holds the fact: a distractor never contains the asked name or ID.
        others = [c for i, c in enumerate(question.choices) if i != question.answer_index]
        assert not [c for c in others if re.search(re.escape(question.short_answer) + r"\b", c)]


def test_phrasings_and_kinds_per_training_weakness(weaknesses) -> None:
    generated = cwe_instructions(weaknesses, 0.05, 1234, 2, 64, 4)
    per_kind = Counter(cid.rsplit("/", 1)[0] for cid, _ in generated.train)
    assert set(per_kind.values()) == {2}
    kinds = Counter(key.split("/")[1] for key in per_kind)
    usable = len({key.split("/")[0] for key in per_kind})
    # Every kind is asked of every weakness whose record has the answer (consequences and mitigations are missing
    # from some).
    assert kinds["id_to_name"] == kinds["name_to_id"] == kinds["description_to_weakness"] == usable
    assert 0.9 * usable < kinds["consequences"] <= usable and 0.6 * usable < kinds["mitigations"] <= usable
    cid, messages = next(item for item in generated.train if item[0].startswith("cwe#CWE-79/id_to_name/"))
    assert messages[-1]["content"].startswith("CWE-79 is Improper Neutralization of Input During Web Page")
    assert messages[0]["content"] == QUESTIONS["id_to_name"][int(cid.rsplit("/", 1)[1])].format(key="CWE-79")


def test_the_same_seed_gives_the_same_data_and_another_seed_other_held_out(weaknesses) -> None:
    first = cwe_instructions(weaknesses, 0.05, 1234, 3, 64, 4)
    assert cwe_instructions(weaknesses, 0.05, 1234, 3, 64, 4) == first
    # A weakness added to (or removed from) the catalogue changes nothing about the others.
    shorter = cwe_instructions([w for w in weaknesses if w.key != "CWE-79"], 0.05, 1234, 3, 64, 4)
    assert shorter.held_out == first.held_out
    assert [c for c in first.train if not c[0].startswith("cwe#CWE-79/")] == shorter.train
    assert cwe_instructions(weaknesses, 0.05, 7, 3, 64, 4).held_out != first.held_out


def test_weaknesses_pretraining_held_out_are_never_held_out_here(weaknesses) -> None:
    first = cwe_instructions(weaknesses, 0.05, 1234, 3, 64, 4)
    kept_for_pretraining = frozenset(first.held_out[:10])
    generated = cwe_instructions(weaknesses, 0.05, 1234, 3, 64, 4, not_held_out=kept_for_pretraining)
    assert not kept_for_pretraining & set(generated.held_out)
    assert set(generated.held_out) == set(first.held_out) - kept_for_pretraining


def test_cwe_source_through_load_instructions(weaknesses) -> None:
    report = CorpusReport()
    config = InstructConfig(instructions="cwe", eval_questions=12, cwe_phrasings=1)
    loaded = load_instructions(config, DataConfig(), report)
    assert len(loaded.questions) == 12 and loaded.held_out_subjects
    assert report.kept == len(loaded.train) + len(loaded.validation) and report.files_by_format == {"cwe": 1}
    assert not report.dropped  # generated text is clean, and no two conversations are the same


def weakness(number: int, name: str) -> Weakness:
    return Weakness(
        id=str(number),
        name=name,
        status="Stable",
        abstraction="Base",
        description=f"Weakness {number} described.",
        extended_description="",
        related=(),
        consequences=(),
        mitigations=(),
        observed_examples=(),
        demonstrative_intros=(),
    )


def test_a_small_catalogue_still_holds_one_out_and_shared_names_are_not_asked_for_an_id() -> None:
    catalogue = [weakness(1, "Twin Name"), weakness(2, "Twin Name"), weakness(3, "Own Name")]
    generated = cwe_instructions(catalogue, 0.01, 1234, 1, 8, 2)
    assert len(generated.held_out) == 1  # 1% of 3 rounds to none: one is held out all the same
    kinds = {cid.split("/")[0]: set() for cid, _ in generated.train + generated.validation}
    for cid, _ in generated.train + generated.validation:
        kinds[cid.split("/")[0]].add(cid.split("/")[1])
    # A name shared by two weaknesses has two IDs: no name -> ID question for either of them.
    assert "name_to_id" not in kinds["cwe#CWE-1"] | kinds["cwe#CWE-2"] and "name_to_id" in kinds["cwe#CWE-3"]
    with pytest.raises(ValueError, match="1 usable weaknesses cannot be split into training and held-out ones"):
        cwe_instructions(catalogue[:1], 0.5, 1234, 1, 8, 2)
