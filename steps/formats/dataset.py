"""The prepared dataset folder: the format prepare writes and train and evaluate read.

    <dataset>/train/, validation/   Arrow datasets (`save_to_disk` layout) of fixed-length
                                   `input_ids` blocks, documents packed with a separator between them
    <dataset>/prompts.jsonl        held-out prompts: doc_id, prompt, prompt_ids, reference
    <dataset>/report.jsonl         every skipped, dropped or redacted document and why
    <dataset>/summary.json         the prepare summary (`steps.results.PrepareSummary`)

Document ids are `<source>#<key>` (`cwec_v4.14.xml#CWE-79`) or the source alone
for one-document files; `document_id` and `record_key` are the scheme's two sides.
The blocks themselves are written and read by `steps.formats.blocks`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation")
PROMPTS_FILE = "prompts.jsonl"
REPORT_FILE = "report.jsonl"
DATASET_SUMMARY_FILE = "summary.json"


def document_id(source: str, key: str) -> str:
    """A document's id: its source (path below the corpus root) and its key inside the source, if any."""
    return f"{source}#{key}" if key else source


def record_key(doc_id: str) -> str:
    """The key inside the source (`CWE-79`) of a document id; the whole id for a one-document file."""
    return doc_id.rsplit("#", 1)[-1]


def write_prompts(dataset_dir: Path, prompts: list[dict[str, Any]]) -> None:
    with open(dataset_dir / PROMPTS_FILE, "w") as handle:
        for row in prompts:
            handle.write(json.dumps(row) + "\n")


def read_prompts(dataset_dir: Path) -> list[dict[str, Any]]:
    """The held-out prompts prepare cut from validation documents, in order."""
    return [json.loads(line) for line in (dataset_dir / PROMPTS_FILE).read_text().splitlines()]
