"""The embedded instruction data: questions and answers generated from the CWE catalogue's records.

Five kinds per weakness (ID -> name, name -> ID, description -> weakness, its consequences, its
mitigations), each in several phrasings. The split is by weakness: a held-out weakness has no
conversation in the training side at all, while its own document stays in the pretraining corpus. Its
questions (ID -> name, name -> ID, description -> weakness: answers that can be checked) can then only be
answered from what continued pretraining taught, in the answer format instruction tuning taught on other
weaknesses. That is the experiment of issue 29.

Everything is a function of the catalogue and the seed. A weakness's side and its conversations depend on
that weakness and the seed alone (hashed and seeded per weakness), so adding a weakness to the catalogue
changes no other weakness's side or conversations (which questions are asked, and their distractors, are
drawn from all the held-out weaknesses).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from steps.formats.cwe_catalogue import Weakness
from steps.formats.instruction_folder import Question
from steps.prepare.split import is_validation

QUESTIONS = {
    "id_to_name": (
        "What is {key}?",
        "Which weakness is {key} in the CWE catalogue?",
        "Name the weakness with the identifier {key}.",
        "What is the name of {key}?",
    ),
    "name_to_id": (
        'What is the CWE ID of the weakness "{name}"?',
        'Which CWE entry is named "{name}"?',
        "Give the CWE identifier of this weakness: {name}",
        '"{name}" is which CWE?',
    ),
    "description_to_weakness": (
        "Which CWE weakness is this? {description}",
        "Name the weakness described here: {description}",
        "What CWE entry matches this description? {description}",
        "Identify the weakness, with its CWE ID: {description}",
    ),
    "consequences": (
        "What are the common consequences of {key} ({name})?",
        "What can an attacker achieve through {key}?",
        "What is the impact of {name}?",
        "Which security properties does {key} put at risk, and how?",
    ),
    "mitigations": (
        "How can {key} ({name}) be mitigated?",
        "How do I prevent {key}?",
        "What is a mitigation for {name}?",
        "Suggest a way to avoid {key}.",
    ),
}
ANSWERS = {
    "id_to_name": "{key} is {name}.",
    "name_to_id": "{name} is {key}.",
    "description_to_weakness": "This is {key}: {name}.",
}
EVAL_KINDS = ("id_to_name", "name_to_id", "description_to_weakness")
"""Kinds asked of held-out weaknesses: their answers are one fact, checked by whether an answer contains it."""
MAX_CONSEQUENCES = 3
MITIGATION_CHARS = 400


@dataclass(frozen=True)
class CweInstructions:
    train: list[tuple[str, list[dict[str, str]]]]
    """(conversation id, messages) about the training weaknesses."""
    validation: list[tuple[str, list[dict[str, str]]]]
    """The held-out weaknesses' conversations: validation loss, never trained on."""
    questions: list[Question]
    held_out: list[str]
    """Keys (`CWE-79`) of the held-out weaknesses."""


def _first_sentences(text: str, limit: int) -> str:
    """Whole sentences of `text` up to about `limit` characters (at least the first, cut at a word if longer)."""
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    if cut > 0:
        return text[: cut + 1]
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def _consequences(weakness: Weakness) -> str | None:
    parts = [
        f"{', '.join(c.scopes)}: {', '.join(c.impacts)}"
        for c in weakness.consequences[:MAX_CONSEQUENCES]
        if c.scopes and c.impacts
    ]
    return f"The common consequences of {weakness.key} are: " + "; ".join(parts) + "." if parts else None


def _mitigations(weakness: Weakness) -> str | None:
    for mitigation in weakness.mitigations:
        if mitigation.description:
            phases = f" ({', '.join(mitigation.phases)})" if mitigation.phases else ""
            return (
                f"A mitigation of {weakness.key}{phases}: {_first_sentences(mitigation.description, MITIGATION_CHARS)}"
            )
    return None


def answer(weakness: Weakness, kind: str) -> str | None:
    """The answer to a question of `kind` about `weakness`; None when the catalogue does not say."""
    if kind in ANSWERS:
        return ANSWERS[kind].format(key=weakness.key, name=weakness.name)
    return _consequences(weakness) if kind == "consequences" else _mitigations(weakness)


def _fields(weakness: Weakness) -> dict[str, str]:
    return {"key": weakness.key, "name": weakness.name or "", "description": weakness.description}


def _conversations(weakness: Weakness, kinds: Iterable[str], phrasings: int, seed: int):
    rng = random.Random(f"{seed}:{weakness.key}")
    for kind in kinds:
        reply = answer(weakness, kind)
        if reply is None:
            continue
        for number in sorted(rng.sample(range(len(QUESTIONS[kind])), phrasings)):
            question = QUESTIONS[kind][number].format(**_fields(weakness))
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
            yield f"cwe#{weakness.key}/{kind}/{number}", messages


def _option_fields(weakness: Weakness, other: Weakness, kind: str) -> dict[str, str]:
    """What an option says: the asked part of `weakness`, the answered part of `other`."""
    if kind == "id_to_name":
        return {"key": weakness.key, "name": other.name}
    if kind == "name_to_id":
        return {"key": other.key, "name": weakness.name}
    return {"key": other.key, "name": other.name}


def _question(weakness: Weakness, kind: str, pool: list[Weakness], choices: int, seed: int) -> Question:
    rng = random.Random(f"{seed}:{weakness.key}:{kind}")
    number = rng.randrange(len(QUESTIONS[kind]))
    others = [w for w in pool if w.key != weakness.key and w.name != weakness.name]
    # The distractors' answers follow the reference's own wording, so only the fact differs between options.
    distractors = rng.sample(others, min(choices - 1, len(others)))
    options = [ANSWERS[kind].format(**_option_fields(weakness, other, kind)) for other in [weakness, *distractors]]
    order = list(range(len(options)))
    rng.shuffle(order)
    return Question(
        question_id=f"cwe#{weakness.key}/{kind}/{number}",
        kind=kind,
        subject=weakness.key,
        messages=[{"role": "user", "content": QUESTIONS[kind][number].format(**_fields(weakness))}],
        reference=options[0],
        short_answer=weakness.name if kind == "id_to_name" else weakness.key,
        choices=[options[i] for i in order],
        answer_index=order.index(0),
    )


def cwe_instructions(
    weaknesses: Iterable[Weakness],
    held_out_fraction: float,
    seed: int,
    phrasings: int,
    questions: int,
    choices: int,
    not_held_out: frozenset[str] = frozenset(),
) -> CweInstructions:
    """Conversations and held-out questions from the catalogue's weaknesses (deprecated or undescribed ones left out).

    `not_held_out`: keys never held out — the weaknesses whose documents pretraining held out for its own
    validation, so that every held-out question is about a weakness whose document pretraining trained on.
    """
    usable = [w for w in weaknesses if w.description and w.name and not w.deprecated]
    held = [w for w in usable if w.key not in not_held_out and is_validation(w.key, held_out_fraction, seed)]
    if not held:  # a tiny catalogue: hold out one weakness all the same
        eligible = [w for w in usable if w.key not in not_held_out]
        held = [min(eligible, key=lambda w: w.key)] if len(eligible) > 1 else []
    if not held or len(held) == len(usable):
        raise ValueError(f"{len(usable)} usable weaknesses cannot be split into training and held-out ones")
    held_keys = {w.key for w in held}
    # A name shared by two weaknesses has two IDs: its name -> ID question would teach a coin toss.
    names = [w.name for w in usable]
    shared = {name for name in names if names.count(name) > 1}
    kinds = lambda w: [k for k in QUESTIONS if not (k == "name_to_id" and w.name in shared)]  # noqa: E731
    train, validation = [], []
    for weakness in usable:
        side = validation if weakness.key in held_keys else train
        side.extend(_conversations(weakness, kinds(weakness), phrasings if side is train else 1, seed))
    rng = random.Random(seed)
    asked = [(w, kind) for w in held for kind in EVAL_KINDS if kind in kinds(w)]
    picked = sorted(rng.sample(range(len(asked)), min(questions, len(asked))))
    return CweInstructions(
        train=train,
        validation=validation,
        questions=[_question(*asked[i], held, choices, seed) for i in picked],
        held_out=sorted(held_keys),
    )
