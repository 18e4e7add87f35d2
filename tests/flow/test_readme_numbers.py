"""The README's "What the default run shows" table is what a default run gives (issue 31: it drifted once).

One run of the shipped default configuration (configs/default.yaml, the README's `python flows/tune_flow.py run`),
its `eval_summary` held against the table within the tolerances of tests/support/readme_table.py. The same run
checks what a newcomer's first run must also show: every step succeeded and the model it converted loads.
"""

from __future__ import annotations

import pytest

from steps.project_files import DEFAULT_CONFIG
from tests.support.flow_runs import client_run, flow_home, run_flow
from tests.support.readme_table import disagreements, readme_rows, rows_of


@pytest.mark.slow
def test_the_readme_table_is_what_a_default_run_gives(tmp_path) -> None:
    home = flow_home(tmp_path / "flow")
    run = client_run(home, run_flow(home, DEFAULT_CONFIG))
    end = run["end"].task.data
    assert disagreements(readme_rows(), rows_of(end.eval_summary)) == []
    assert end.conversion["logits_match"] is True and end.eval_summary["engines_agree"] is True
    assert end.train_summary["steps"] == 1200 and set(end.references) >= {"dataset", "checkpoint", "model"}
