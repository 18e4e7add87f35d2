"""The evaluate step's controller: runs `steps.evaluate` under torchrun and publishes the evaluation folder.

Runs in the Metaflow step process and imports no torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from steps.config import TuneConfig, write_config
from steps.evaluate.output_files import GENERATIONS_FILE, PROBES_FILE, SUMMARY_FILE
from steps.evaluate.progress import read_progress_line
from steps.formats.model_folder import resolve_base_model
from steps.results import EvalSummary, EvaluateResult, GenerationRow, ProbeRow, TrainSummary
from steps.runtime.file_watcher import FileWatcher
from steps.runtime.launch import cli_args, run_torchrun
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import Storage, StoredDir, fetch


def evaluate_stage(
    config: TuneConfig,
    storage: Storage,
    model: StoredDir,
    dataset: StoredDir,
    train_summary: TrainSummary,
    on_progress: Callable[[str], None] | None = None,
    progress_interval_s: float = 5.0,
    base_model_copy: StoredDir | None = None,
) -> EvaluateResult:
    """Evaluate under torchrun; `on_progress` gets rank 0's latest progress line (for a live card) as it changes.

    `base_model_copy`: prepare's dequantized copy of a GGUF base model (`PrepareResult.base_model_copy`)."""
    with stage_scratch("evaluate") as scratch:  # fetched inputs, the base model's copy, the outputs
        return _evaluate(
            config, storage, model, dataset, train_summary, scratch, on_progress, progress_interval_s, base_model_copy
        )


def _evaluate(
    config: TuneConfig,
    storage: Storage,
    model: StoredDir,
    dataset: StoredDir,
    train_summary: TrainSummary,
    work: Path,
    on_progress: Callable[[str], None] | None,
    progress_interval_s: float,
    base_model_copy: StoredDir | None,
) -> EvaluateResult:
    summary_file = work / "train_summary.json"
    summary_file.write_text(train_summary.model_dump_json())
    out = work / "evaluation"
    progress = work / "progress.json"
    args = cli_args(
        config=write_config(config, work / "config.json"),
        model=fetch(model, work / "model"),
        dataset=fetch(dataset, work / "dataset"),
        train_summary=summary_file,
        out=out,
        base_model=resolve_base_model(config.model.base_model, work / "base-model", storage, base_model_copy),
        progress_file=progress,
    )
    watcher = FileWatcher(progress, read_progress_line, on_progress, progress_interval_s, "evaluate progress")
    with watcher if on_progress else contextlib.nullcontext():
        run_torchrun("steps.evaluate", args, config.evaluate.nproc)
    return publish_evaluation(storage, out)


def publish_evaluation(storage: Storage, out: Path) -> EvaluateResult:
    """Publish an evaluation folder (written here or by a SageMaker job) as the run's `evaluate` folder."""
    probes = out / PROBES_FILE
    return EvaluateResult(
        evaluation=storage.publish(out, "evaluate"),
        summary=EvalSummary.model_validate_json((out / SUMMARY_FILE).read_text()),
        table=[GenerationRow(**row) for row in pq.read_table(out / GENERATIONS_FILE).to_pylist()],
        probes=[ProbeRow(**row) for row in pq.read_table(probes).to_pylist()] if probes.is_file() else [],
    )
