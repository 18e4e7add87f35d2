"""The evaluation folder's files, named once for the ranks that write them and the runner that reads them.

Torch-free: the runner reads the tables back for the flow's artifacts and the card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

GENERATIONS_FILE = "generations.parquet"
"""One row per prompt and engine (`steps.results.GenerationRow`)."""
PROBES_FILE = "probes.parquet"
"""One row per probe and model (`steps.results.ProbeRow`); absent when no probes ran."""
ANSWERS_FILE = "answers.parquet"
"""One row per held-out question and model (`steps.results.AnswerRow`); absent without instruction tuning."""
EVAL_SUMMARY_FILE = "eval_summary.json"
"""`steps.results.EvalSummary`."""
PROGRESS_FILE = "progress.json"
"""Rank 0's latest progress line (`steps.evaluate.progress`), which the runner follows for the live card."""


def read_tables(out: Path) -> dict[str, Any]:
    """The generations, probes and answers of a written evaluation folder, as the result's `eval_table`, `probes`
    and `answers`."""
    probes, answers = out / PROBES_FILE, out / ANSWERS_FILE
    return {
        "eval_table": pq.read_table(out / GENERATIONS_FILE).to_pylist(),
        "probes": pq.read_table(probes).to_pylist() if probes.is_file() else [],
        "answers": pq.read_table(answers).to_pylist() if answers.is_file() else [],
    }
