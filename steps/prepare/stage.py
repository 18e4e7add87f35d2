"""The prepare step's controller: runs `python -m steps.prepare` and publishes the dataset and tokenizer.

Runs in the Metaflow step process and imports no torch; the work happens in the
child process (see `steps.prepare.__main__`).
"""

from __future__ import annotations

from pathlib import Path

from steps.config import TuneConfig, write_config
from steps.formats.dataset import SUMMARY_FILE
from steps.formats.model_folder import resolve_base_model
from steps.results import PrepareResult, PrepareSummary
from steps.runtime.launch import cli_args, run_module
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import Storage


def prepare_stage(config: TuneConfig, storage: Storage) -> PrepareResult:
    with stage_scratch("prepare") as scratch:  # the base model's copy and the outputs go once published
        return _prepare(config, storage, scratch)


def _prepare(config: TuneConfig, storage: Storage, scratch: Path) -> PrepareResult:
    work = scratch / "out"
    base_model = resolve_base_model(config.model.base_model, scratch / "base-model", storage)
    config_file = write_config(config, scratch / "config.json")
    run_module("steps.prepare", cli_args(config=config_file, out=work, base_model=base_model))
    return PrepareResult(
        dataset=storage.publish(work / "dataset", "prepare/dataset"),
        tokenizer=storage.publish(work / "tokenizer", "prepare/tokenizer"),
        summary=PrepareSummary.model_validate_json((work / "dataset" / SUMMARY_FILE).read_text()),
    )
