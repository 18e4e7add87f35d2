"""The README's "What the default run shows" table, read back and held against a default run's `eval_summary`.

Each row of the table is recomputed from the summary as the README rounds it; the two must agree within
`TOLERANCES`, which allow for what another CPU's rounding moves (README: "Other CPUs round differently").
"""

from __future__ import annotations

import re
from pathlib import Path

from steps.project_files import REPO_ROOT

HEADER = "| metric (`eval_summary`) | before tuning | after tuning |"
TOLERANCES = {
    "perplexity": 0.05,
    "exact match count": 3,
    "log-likelihood": 0.15,
    "multiple choice": 0.06,
    "exact match share": 0.004,
}
"""Relative for perplexity; absolute otherwise (counts of the 886 trained weaknesses, shares, nats per token)."""

ROWS = (
    "held-out perplexity",
    "ID → name, exact match",
    "ID → name, log-likelihood",
    "ID → name, multiple choice",
    "description → name, multiple choice",
    "all probes",
)


def _numbers(cell: str) -> list[float]:
    return [float(n.replace("−", "-")) for n in re.findall(r"[−-]?\d+(?:\.\d+)?", cell)]


def readme_rows(readme: Path = REPO_ROOT / "README.md") -> dict[str, tuple[list[float], list[float]]]:
    """Row label → (before, after) numbers, for the rows of `ROWS`, as the README states them."""
    lines = readme.read_text().splitlines()
    start = lines.index(HEADER) + 2
    table = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        label, before, after = (cell.strip() for cell in line.strip("|").split("|"))
        key = next((row for row in ROWS if label.startswith(row)), None)
        if key is not None:
            table[key] = (_numbers(before), _numbers(after))
    return table


def rows_of(summary: dict) -> dict[str, tuple[list[float], list[float]]]:
    """The same rows computed from an `eval_summary`."""

    def side(model: str) -> dict[str, list[float]]:
        probes = summary["probes"][model]
        train, held = probes["id_to_name/train"], probes["id_to_name/validation"]
        described_train, described_held = probes["description_to_name/train"], probes["description_to_name/validation"]
        everything = probes["all"]
        return {
            "held-out perplexity": [summary["perplexity"][model]],
            "ID → name, exact match": [
                round(train["exact_match"] * train["probes"]),
                round(held["exact_match"] * held["probes"]),
            ],
            "ID → name, log-likelihood": [train["answer_logprob_per_token"], held["answer_logprob_per_token"]],
            "ID → name, multiple choice": [train["choice_accuracy"], held["choice_accuracy"]],
            "description → name, multiple choice": [
                described_train["choice_accuracy"],
                described_held["choice_accuracy"],
            ],
            "all probes": [
                everything["exact_match"],
                everything["answer_logprob_per_token"],
                everything["choice_accuracy"],
            ],
        }

    before, after = side("untuned"), side("tuned")
    return {row: (before[row], after[row]) for row in ROWS}


def _tolerance(row: str, index: int) -> tuple[float, bool]:
    """(tolerance, relative) for the `index`-th number of `row`."""
    if row == "held-out perplexity":
        return TOLERANCES["perplexity"], True
    if row == "ID → name, exact match":
        return TOLERANCES["exact match count"], False
    if row == "ID → name, log-likelihood":
        return TOLERANCES["log-likelihood"], False
    if row == "all probes":
        kind = ("exact match share", "log-likelihood", "multiple choice")[index]
        return TOLERANCES[kind], False
    return TOLERANCES["multiple choice"], False


def disagreements(readme: dict, measured: dict) -> list[str]:
    """Every README number further from the run's than its tolerance, as `row (before|after) #i: README x, run y`."""
    problems = []
    for row in ROWS:
        if row not in readme:
            problems.append(f"{row}: missing from the README's table")
            continue
        for side, stated, actual in zip(("before", "after"), readme[row], measured[row], strict=True):
            if len(stated) != len(actual):
                problems.append(f"{row} ({side}): README has {stated}, the run {len(actual)} numbers")
                continue
            for index, (a, b) in enumerate(zip(stated, actual, strict=True)):
                tolerance, relative = _tolerance(row, index)
                allowed = tolerance * abs(b) if relative else tolerance
                if abs(a - b) > allowed:
                    where = f"{row} ({side}) #{index + 1}"
                    problems.append(f"{where}: README {a}, the run {b:.4g} (tolerance {allowed:.3g})")
    return problems
