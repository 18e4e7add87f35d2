"""The README table's reader and its comparison, on the table as it stands and on a run that drifted from it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.readme_table import ROWS, disagreements, readme_rows, rows_of

SUMMARY = Path(__file__).parent / "data" / "default_eval_summary.json"


def test_every_row_of_the_readme_table_is_read_with_its_numbers() -> None:
    table = readme_rows()
    assert set(table) == set(ROWS)
    assert [len(side) for side in table["held-out perplexity"]] == [1, 1]
    assert [len(side) for side in table["all probes"]] == [3, 3]
    assert all(len(before) == len(after) for before, after in table.values())


def test_a_run_that_drifted_from_the_readme_is_named_row_by_row() -> None:
    summary = json.loads(SUMMARY.read_text())  # the default run the table was written from
    assert disagreements(readme_rows(), rows_of(summary)) == []
    summary["perplexity"]["tuned"] *= 1.2
    summary["probes"]["tuned"]["id_to_name/train"]["choice_accuracy"] -= 0.1
    problems = disagreements(readme_rows(), rows_of(summary))
    assert len(problems) == 2
    assert problems[0].startswith("held-out perplexity (after) #1: README 24.4, the run 29.27")
    assert problems[1].startswith("ID → name, multiple choice (after) #1: README 0.62, the run 0.5163")
