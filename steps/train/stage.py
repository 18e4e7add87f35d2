"""The train step's controller: runs this node's torchrun of `steps.train` and, on node 0, seals the train folder.

Runs in the Metaflow step process (one per node under `@parallel`), or wherever
`steps.dispatch` puts it; it imports no torch. Checkpoints go to
`<storage>/train/checkpoints` from every rank; training continues from the newest
complete one there (a retried attempt) or under `resume_from` (the checkpoint roots
of the run this one resumes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from steps.config import TuneConfig, write_config
from steps.formats.model_folder import resolve_base_model
from steps.formats.train_folder import CHECKPOINTS, LOGS, METRICS_FILE, SUMMARY_FILE, checkpoint_entries
from steps.results import TrainMetric, TrainResult, TrainSummary
from steps.runtime.file_watcher import FileWatcher
from steps.runtime.launch import LaunchError, Rendezvous, cli_args, run_torchrun
from steps.runtime.node_logs import collect_node_logs, mark_node_running, node_log_path, publish_node_log
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import Storage, StoredDir, fetch

TRAIN = "train"
"""The train folder's name in the run's storage."""


def read_metrics(path: Path) -> list[TrainMetric]:
    """The complete records of a metrics.jsonl that may still be growing (a last line half-written is skipped)."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return [TrainMetric.model_validate_json(line) for line in lines if line.endswith("}")]


def train_stage(
    config: TuneConfig,
    storage: Storage,
    dataset: StoredDir,
    tokenizer: StoredDir,
    rdzv: Rendezvous,
    resume_from: Sequence[str] = (),
    on_metrics: Callable[[list[TrainMetric]], None] | None = None,
    metrics_interval_s: float = 5.0,
    base_model_copy: StoredDir | None = None,
) -> TrainResult | None:
    """Run this node's share of training; node 0 returns the sealed train folder and its records.

    `base_model_copy`: prepare's dequantized copy of a GGUF base model (`PrepareResult.base_model_copy`)."""
    with stage_scratch("train") as scratch:  # fetched inputs, the base model's copy, checkpoint staging
        base_model = resolve_base_model(config.model.base_model, scratch / "base-model", storage, base_model_copy)
        return _train(
            config, storage, dataset, tokenizer, base_model, rdzv, resume_from, on_metrics, metrics_interval_s, scratch
        )


def _train(
    config: TuneConfig,
    storage: Storage,
    dataset: StoredDir,
    tokenizer: StoredDir,
    base_model: Path | None,
    rdzv: Rendezvous,
    resume_from: Sequence[str],
    on_metrics: Callable[[list[TrainMetric]], None] | None,
    metrics_interval_s: float,
    scratch: Path,
) -> TrainResult | None:
    out = storage.workdir(TRAIN, under=scratch)
    staging = scratch / "checkpoint-staging"  # one per machine, shared by its ranks
    staging.mkdir()
    checkpoints = storage.child(f"{TRAIN}/{CHECKPOINTS}")
    logs = storage.child(f"{TRAIN}/{LOGS}")
    log_file = node_log_path(out, rdzv.node_rank)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")  # this attempt's log only
    if rdzv.node_rank != 0:
        mark_node_running(logs, rdzv.node_rank)
    args = cli_args(
        config=write_config(config, scratch / "config.json"),
        dataset=fetch(dataset, scratch / "dataset"),
        tokenizer=fetch(tokenizer, scratch / "tokenizer"),
        out=out,
        base_model=base_model,
        checkpoint_uri=checkpoints.root,
        checkpoint_staging=staging,
    )
    for root in resume_from:
        args += ["--resume-from", root]
    timeout = config.train.failure_timeout_s
    failure: LaunchError | None = None
    metrics_file = out / METRICS_FILE

    def publish_metrics(records: list[TrainMetric]) -> None:
        if metrics_file.is_file():  # in place already when the storage is on this machine
            storage.put_file(metrics_file, f"{TRAIN}/{METRICS_FILE}")
        if on_metrics:
            on_metrics(records)

    watcher = FileWatcher(metrics_file, read_metrics, publish_metrics, metrics_interval_s, "live metrics")
    try:
        with watcher if rdzv.node_rank == 0 else contextlib.nullcontext():
            run_torchrun("steps.train", args, config.train.nproc_per_node, rdzv, timeout_s=timeout, log_file=log_file)
    except LaunchError as exc:
        failure = exc
    if rdzv.node_rank != 0:
        publish_node_log(out, logs, rdzv.node_rank, 1 if failure else 0)
        if failure:
            raise failure
        return None
    # Healthy peers finish within seconds of us; a dead one never writes its marker.
    collect_node_logs(out, logs, rdzv.num_nodes, wait_s=min(timeout, 60) if failure else timeout)
    if failure:
        raise failure
    return TrainResult(
        # Checkpoint shards that other machines stored join the folder's manifest without passing through here.
        checkpoint=storage.seal(out, TRAIN, elsewhere=checkpoint_entries(checkpoints)),
        summary=TrainSummary.model_validate_json((out / SUMMARY_FILE).read_text()),
        metrics=read_metrics(metrics_file),
    )
