"""The prepare step's controller: runs `python -m steps.prepare` and publishes the dataset and tokenizer.

Runs in the Metaflow step process and imports no torch; the work happens in the
child process (see `steps.prepare.__main__`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from steps.config import TuneConfig, write_temp_config
from steps.formats.dataset import SUMMARY_FILE
from steps.formats.model_folder import resolve_base_model
from steps.results import PrepareResult, PrepareSummary
from steps.runtime.launch import cli_args, run_module
from steps.runtime.storage import Storage


def prepare_stage(config: TuneConfig, storage: Storage) -> PrepareResult:
    work = Path(tempfile.mkdtemp(prefix="tune-prepare-"))
    base_model = resolve_base_model(config.model.base_model, storage)
    run_module("steps.prepare", cli_args(config=write_temp_config(config), out=work, base_model=base_model))
    return PrepareResult(
        dataset=storage.publish(work / "dataset", "prepare/dataset"),
        tokenizer=storage.publish(work / "tokenizer", "prepare/tokenizer"),
        summary=PrepareSummary.model_validate_json((work / "dataset" / SUMMARY_FILE).read_text()),
    )
