"""One function per pipeline stage: fetch inputs from run storage, do the work, publish outputs.

This is what the flow calls, one line per step; it knows nothing of Metaflow, so
a SageMaker or Batch container, or a test, can call it the same way. Stored
folders travel as `StoredDir` dicts (URI plus content hash).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from steps.config import TuneConfig, write_config
from steps.launch import LaunchError, Rendezvous, cli_args, run_torchrun
from steps.node_logs import collect_node_logs, mark_node_running, node_log_path, publish_node_log
from steps.storage import RunStorage, StoredDir, download_prefix, fetch, put_file


def resolve_base_model(spec: str | None) -> Path | None:
    """A local folder for the base model: as given, or downloaded from an s3:// prefix."""
    if not spec:
        return None
    if spec.startswith("s3://"):
        return download_prefix(spec, Path(tempfile.mkdtemp(prefix="tune-base-model-")))
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.base_model = {spec!r} is not a Hugging Face model folder (no config.json)")
    return path


def _config_file(config: TuneConfig) -> Path:
    return write_config(config, Path(tempfile.mkdtemp(prefix="tune-config-")) / "config.json")


def prepare_stage(config: TuneConfig, storage: RunStorage) -> dict[str, Any]:
    from steps.domain_tokenizer import load_tokenizer
    from steps.prepare import run_prepare, sample_blocks

    work = Path(tempfile.mkdtemp(prefix="tune-prepare-"))
    summary = run_prepare(config.data, work, resolve_base_model(config.model.base_model))
    summary["sample_blocks"] = sample_blocks(work / "dataset", load_tokenizer(work / "tokenizer"))
    return {
        "dataset": storage.publish(work / "dataset", "prepare/dataset").to_dict(),
        "tokenizer": storage.publish(work / "tokenizer", "prepare/tokenizer").to_dict(),
        "summary": summary,
    }


class MetricsWatcher:
    """Hands new records of a growing metrics.jsonl to a callback (the live card) every few seconds."""

    def __init__(self, path: Path, on_metrics: Callable[[list[dict]], None], interval_s: float = 5.0) -> None:
        self.path, self.on_metrics, self.interval_s = path, on_metrics, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._seen = -1

    def __enter__(self) -> MetricsWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        try:
            lines = self.path.read_text().splitlines() if self.path.is_file() else []
        except OSError:
            return
        records = [json.loads(line) for line in lines if line.endswith("}")]
        if len(records) != self._seen:
            self._seen = len(records)
            try:
                self.on_metrics(records)
            except Exception as exc:  # a card that fails to refresh must not stop training
                print(f"live metrics update failed: {exc}", flush=True)


def train_stage(
    config: TuneConfig,
    storage: RunStorage,
    dataset: dict,
    tokenizer: dict,
    rdzv: Rendezvous,
    resume_from: Sequence[str] = (),
    on_metrics: Callable[[list[dict]], None] | None = None,
    metrics_interval_s: float = 5.0,
) -> dict[str, Any] | None:
    """Run this node's share of training; node 0 returns the sealed training folder and its records.

    Checkpoints go to `<storage>/train/checkpoints` from every rank; training continues
    from the newest complete one there (a retried attempt) or under `resume_from` (the
    checkpoint roots of the run this one resumes).
    """
    dataset_dir = fetch(StoredDir.from_dict(dataset))
    tokenizer_dir = fetch(StoredDir.from_dict(tokenizer))
    out = storage.workdir("train")
    checkpoint_uri = storage.uri("train/checkpoints")
    logs_uri = storage.uri("train/logs")
    log_file = node_log_path(out, rdzv.node_rank)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")  # this attempt's log only
    if rdzv.node_rank != 0:
        mark_node_running(logs_uri, rdzv.node_rank)
    args = cli_args(
        config=_config_file(config),
        dataset=dataset_dir,
        tokenizer=tokenizer_dir,
        out=out,
        base_model=resolve_base_model(config.model.base_model),
        checkpoint_uri=checkpoint_uri,
        checkpoint_staging=Path(tempfile.mkdtemp(prefix="tune-checkpoint-staging-")) if storage.is_s3 else None,
    )
    for root in resume_from:
        args += ["--resume-from", root]
    timeout = config.train.failure_timeout_s
    failure: LaunchError | None = None
    metrics_file = out / "metrics.jsonl"

    def publish_metrics(records: list[dict]) -> None:
        if storage.is_s3 and metrics_file.is_file():  # local storage has the file in place already
            put_file(metrics_file, storage.uri("train/metrics.jsonl"))
        if on_metrics:
            on_metrics(records)

    watcher = MetricsWatcher(metrics_file, publish_metrics, metrics_interval_s) if rdzv.node_rank == 0 else None
    try:
        with watcher or contextlib.nullcontext():
            run_torchrun("steps.train", args, config.train.nproc_per_node, rdzv, timeout_s=timeout, log_file=log_file)
    except LaunchError as exc:
        failure = exc
    if rdzv.node_rank != 0:
        publish_node_log(out, logs_uri, rdzv.node_rank, 1 if failure else 0)
        if failure:
            raise failure
        return None
    # Healthy peers finish within seconds of us; a dead one never writes its marker.
    collect_node_logs(out, logs_uri, rdzv.num_nodes, wait_s=min(timeout, 60) if failure else timeout)
    if failure:
        raise failure
    from steps.checkpoint import checkpoint_entries  # torch: kept out of the flow file's imports

    metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    entries = checkpoint_entries(checkpoint_uri, "checkpoints") if storage.is_s3 else []
    return {
        "checkpoint": storage.seal(out, "train", stored=entries).to_dict(),
        "summary": json.loads((out / "train_summary.json").read_text()),
        "metrics": metrics,
    }


def train_on_target(
    config: TuneConfig,
    storage: RunStorage,
    dataset: dict,
    tokenizer: dict,
    rdzv: Rendezvous,
    resume_from: Sequence[str],
    on_metrics: Callable[[list[dict]], None] | None,
    job_name: str,
) -> dict[str, Any] | None:
    """Train where `compute.train` says: under torchrun on this node, or as a SageMaker job named `job_name`."""
    if config.compute.train.target == "sagemaker":  # this one task submits and waits for the whole job
        from steps.sagemaker_job import sagemaker_train_stage

        return sagemaker_train_stage(config, storage, dataset, tokenizer, job_name, resume_from=resume_from)
    return train_stage(config, storage, dataset, tokenizer, rdzv, resume_from, on_metrics)


def convert_stage(config: TuneConfig, storage: RunStorage, checkpoint: dict, tokenizer: dict) -> dict[str, Any]:
    from steps.convert import run_convert

    train_dir = fetch(StoredDir.from_dict(checkpoint), verify=False)
    tokenizer_dir = fetch(StoredDir.from_dict(tokenizer))
    out = Path(tempfile.mkdtemp(prefix="tune-convert-")) / "model"
    record = run_convert(config, train_dir, tokenizer_dir, out)
    return {"model": storage.publish(out, "convert/model").to_dict(), "verification": record}


def evaluate_stage(
    config: TuneConfig, storage: RunStorage, model: dict, dataset: dict, train_summary: dict
) -> dict[str, Any]:
    model_dir = fetch(StoredDir.from_dict(model))
    dataset_dir = fetch(StoredDir.from_dict(dataset))
    work = Path(tempfile.mkdtemp(prefix="tune-evaluate-"))
    summary_file = work / "train_summary.json"
    summary_file.write_text(json.dumps(train_summary))
    out = work / "evaluation"
    args = cli_args(
        config=_config_file(config),
        model=model_dir,
        dataset=dataset_dir,
        train_summary=summary_file,
        out=out,
        base_model=resolve_base_model(config.model.base_model),
    )
    run_torchrun("steps.evaluate", args, config.evaluate.nproc)
    probes = out / "probes.parquet"
    return {
        "evaluation": storage.publish(out, "evaluate").to_dict(),
        "summary": json.loads((out / "eval_summary.json").read_text()),
        "table": pq.read_table(out / "generations.parquet").to_pylist(),
        "probes": pq.read_table(probes).to_pylist() if probes.is_file() else [],
    }
