"""The instruction dataset folder's plain files: their names, the held-out questions and the summary.

Torch- and Arrow-free, so that the runner and the flow read the summary (`steps.stages`); the tokenized
conversations are `steps.formats.instruction_dataset`'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from steps.results import InstructionSummary

SPLITS = ("train", "validation")
QUESTIONS_FILE = "questions.jsonl"
REPORT_FILE = "report.jsonl"
INSTRUCTION_SUMMARY_FILE = "summary.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Question(_Record):
    """A held-out question: what the model is asked, and how its answer is judged."""

    question_id: str
    kind: str
    """`id_to_name`, `name_to_id`, `description_to_weakness` (CWE), or `conversation` (a held-out one of a file)."""
    subject: str
    """What it asks about: a weakness key (`CWE-79`) or the conversation's id."""
    messages: list[dict[str, str]]
    """The conversation up to the question, ending with the user's turn."""
    reference: str
    """The reference answer (an assistant turn's text)."""
    short_answer: str
    """The fact an answer must contain to count as right (the name, the ID); the reference itself for files."""
    choices: list[str] = []
    """Whole answers scored by likelihood, the reference among them; empty when there is no multiple choice."""
    answer_index: int | None = None
    """The reference's place in `choices`."""


def write_questions(folder: Path, questions: Sequence[Question]) -> None:
    with open(Path(folder) / QUESTIONS_FILE, "w") as handle:
        for question in questions:
            handle.write(question.model_dump_json() + "\n")


def read_questions(folder: Path) -> list[Question]:
    path = Path(folder) / QUESTIONS_FILE
    return [Question.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def read_summary(folder: Path) -> InstructionSummary:
    """The folder's summary (what reading kept and dropped, the splits' sizes, the chat template used)."""
    return InstructionSummary.model_validate_json((Path(folder) / INSTRUCTION_SUMMARY_FILE).read_text())


def write_summary(folder: Path, summary: InstructionSummary) -> None:
    (Path(folder) / INSTRUCTION_SUMMARY_FILE).write_text(json.dumps(summary.model_dump(), indent=1))
