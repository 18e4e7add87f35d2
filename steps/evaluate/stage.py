"""The evaluate step's controller: runs `steps.evaluate` under torchrun and publishes the evaluation folder.

Runs in the Metaflow step process and imports no torch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from steps.config import TuneConfig, write_temp_config
from steps.evaluate.output_files import GENERATIONS_FILE, PROBES_FILE, SUMMARY_FILE
from steps.formats.model_folder import resolve_base_model
from steps.results import EvalSummary, EvaluateResult, GenerationRow, ProbeRow, TrainSummary
from steps.runtime.launch import cli_args, run_torchrun
from steps.runtime.storage import Storage, StoredDir, fetch


def evaluate_stage(
    config: TuneConfig, storage: Storage, model: StoredDir, dataset: StoredDir, train_summary: TrainSummary
) -> EvaluateResult:
    work = Path(tempfile.mkdtemp(prefix="tune-evaluate-"))
    summary_file = work / "train_summary.json"
    summary_file.write_text(train_summary.model_dump_json())
    out = work / "evaluation"
    args = cli_args(
        config=write_temp_config(config),
        model=fetch(model),
        dataset=fetch(dataset),
        train_summary=summary_file,
        out=out,
        base_model=resolve_base_model(config.model.base_model, storage),
    )
    run_torchrun("steps.evaluate", args, config.evaluate.nproc)
    probes = out / PROBES_FILE
    return EvaluateResult(
        evaluation=storage.publish(out, "evaluate"),
        summary=EvalSummary.model_validate_json((out / SUMMARY_FILE).read_text()),
        table=[GenerationRow(**row) for row in pq.read_table(out / GENERATIONS_FILE).to_pylist()],
        probes=[ProbeRow(**row) for row in pq.read_table(probes).to_pylist()] if probes.is_file() else [],
    )
