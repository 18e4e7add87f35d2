"""The SageMaker training job request, waiter and names, against moto's SageMaker and CloudWatch Logs (no hosts run)."""

from __future__ import annotations

import re
import time

import boto3
import pytest

from steps.config import TuneConfig
from steps.dispatch.sagemaker_job import (
    TrainingJobError,
    build_request,
    job_prefixes,
    sagemaker_train_stage,
    training_job_name,
    wait_for_job,
)
from steps.runtime.storage import StoredDir, open_storage
from steps.train.progress_line import SAGEMAKER_METRIC_DEFINITIONS, progress_line
from tests.support.aws import IMAGE, ROLE, sagemaker_training_job

NO_DIR = StoredDir("s3://nowhere/x", "0" * 64, 0, 0)


def _on_demand_sagemaker(debug_config: TuneConfig) -> dict:
    """The debug config as a raw mapping, training as a one-instance on-demand SageMaker job."""
    raw = debug_config.model_dump()
    raw["compute"]["train"] = {
        "target": "sagemaker",
        "image": IMAGE,
        "instance_type": "ml.g5.2xlarge",
        "role_arn": ROLE,
    }
    return raw


def test_waiter_streams_logs_and_reports_a_failed_job(aws_env, debug_config) -> None:
    sagemaker, logs = boto3.client("sagemaker"), boto3.client("logs")
    raw = _on_demand_sagemaker(debug_config)
    config = TuneConfig.model_validate(raw)
    storage = open_storage("s3://runs-waiter/TuneFlow/9/files")
    name = training_job_name("TuneFlow", "9", 0)
    prefixes = job_prefixes(storage, name)
    channels = {"config": prefixes["config"], "dataset": storage.uri("d"), "tokenizer": storage.uri("t")}
    request = build_request(config, name, channels, prefixes)
    assert "MaxWaitTimeInSeconds" not in request["StoppingCondition"] and request["EnableManagedSpotTraining"] is False
    sagemaker.create_training_job(**request)
    job = sagemaker_training_job(name)
    job.training_job_status, job.secondary_status = "Failed", "Failed"
    job.failure_reason = "AlgorithmError: ExecuteUserScriptError: torchrun exited with code 1"
    try:
        logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    except logs.exceptions.ResourceAlreadyExistsException:
        pass  # another test's job logged first
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{name}/algo-1-1")
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=f"{name}/algo-1-1",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "rank 0: CUDA out of memory"}],
    )
    echoed: list[str] = []
    with pytest.raises(TrainingJobError, match="ended Failed: AlgorithmError: ExecuteUserScriptError"):
        wait_for_job(sagemaker, logs, name, poll_s=0.01, echo=echoed.append)
    assert "[algo-1-1] rank 0: CUDA out of memory" in echoed
    assert echoed.count("[algo-1-1] rank 0: CUDA out of memory") == 1  # each line once, not per poll


def test_job_names_fit_sagemaker() -> None:
    name = training_job_name("TuneFlow", "argo-tuneflow.user.very-long-run-identifier-1234567890", 3)
    assert len(name) <= 63 and name.replace("-", "").isalnum()


def test_sagemaker_needs_s3_run_storage(debug_config, tmp_path) -> None:
    raw = _on_demand_sagemaker(debug_config)
    with pytest.raises(TrainingJobError, match="--datastore s3"):
        sagemaker_train_stage(TuneConfig.model_validate(raw), open_storage(str(tmp_path)), NO_DIR, NO_DIR, "job")


def test_the_job_metrics_read_the_progress_line_training_prints() -> None:
    record = {"step": 10, "loss": 5.1234, "lr": 2e-3, "grad_norm": 0.9, "tokens_per_s": 1234.4}
    record |= {"tflops": 0.05, "mfu": None, "memory_gib": 0.8}
    line = progress_line(record, total_steps=40, eta_s=62)
    values = {m["Name"]: float(re.search(m["Regex"], line).group(1)) for m in SAGEMAKER_METRIC_DEFINITIONS}
    assert values == {"train:loss": 5.1234, "train:tokens_per_s": 1234.0}
    assert line.endswith("eta 0:01:02")
