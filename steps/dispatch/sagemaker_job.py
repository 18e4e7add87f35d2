"""The train step as a SageMaker training job running our container.

The step publishes the resolved config beside the run's files, sends one
CreateTrainingJob request (channels from the run's S3 storage, checkpoints and
outputs back to it, uncompressed), waits while echoing the job's CloudWatch
logs, and turns anything but `Completed` into a `TrainingJobError` carrying
SageMaker's failure reason. The finished checkpoints and training records are
then published as the run's `train` folder, the same thing the local train
stage returns, so convert cannot tell where training ran.

Secrets never enter the request: the job gets Secrets Manager ARNs/names in
`TUNE_SECRET_SOURCES` and the container reads the values itself.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3

from steps.config import TuneConfig, write_config
from steps.formats.train_folder import (
    CHECKPOINT_RECORD,
    CHECKPOINTS,
    METRICS_FILE,
    OUTPUT_FILES,
    SUMMARY_FILE,
    newest_of,
    verify_checkpoint,
)
from steps.project_files import REPO_ROOT
from steps.results import TrainingJobRecord, TrainResult, TrainSummary
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import Storage, StoredDir, open_storage
from steps.train.progress_line import SAGEMAKER_METRIC_DEFINITIONS
from steps.train.stage import TRAIN, read_metrics

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CHECKPOINTS_FOLDER = "sagemaker/checkpoints"
"""Where a run's SageMaker jobs keep their checkpoints in its storage (per run: a retried job resumes from them)."""
CONTAINER_CHECKPOINTS = "/opt/ml/checkpoints"
SECRET_SOURCES_ENV = "TUNE_SECRET_SOURCES"
_TERMINAL = {"Completed", "Failed", "Stopped"}


class TrainingJobError(RuntimeError):
    """The SageMaker training job did not complete."""


def training_job_name(flow_name: str, run_id: str, attempt: int) -> str:
    """A name SageMaker accepts (≤63 chars, [a-zA-Z0-9-]), unique per run and retry."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{flow_name}-{run_id}").strip("-")
    return f"{base[:40]}-a{attempt}-{stamp}"


def job_prefixes(storage: Storage, name: str) -> dict[str, str]:
    """S3 prefixes of one job inside the run's storage.

    Checkpoints are per run, not per job: a retried step's new job resumes from them.
    """
    return {
        "config": storage.uri(f"sagemaker/{name}/config"),
        "output": storage.uri("sagemaker/output"),
        "checkpoints": storage.uri(CHECKPOINTS_FOLDER),
    }


def _channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri.rstrip("/") + "/",
                # Every host needs the whole dataset: each rank picks its own blocks.
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }


def build_request(config: TuneConfig, name: str, channels: dict[str, str], prefixes: dict[str, str]) -> dict[str, Any]:
    """The CreateTrainingJob request for `config.compute.train` (target sagemaker)."""
    compute = config.compute.train
    max_run = int(compute.max_run_hours * 3600)
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": compute.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": SAGEMAKER_METRIC_DEFINITIONS,
        },
        "RoleArn": compute.role_arn,
        "InputDataConfig": [_channel(channel, uri) for channel, uri in channels.items()],
        # CompressionType NONE: files land as they are, no model.tar.gz to unpack before convert.
        "OutputDataConfig": {"S3OutputPath": prefixes["output"], "CompressionType": "NONE"},
        "ResourceConfig": {
            "InstanceType": compute.instance_type,
            "InstanceCount": config.train.num_nodes,
            "VolumeSizeInGB": compute.volume_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": max_run},
        "CheckpointConfig": {"S3Uri": prefixes["checkpoints"], "LocalPath": CONTAINER_CHECKPOINTS},
        "EnableManagedSpotTraining": compute.spot,
        "Environment": {SECRET_SOURCES_ENV: ",".join(compute.secrets)} if compute.secrets else {},
        "Tags": [{"Key": "tune:job", "Value": name}],
    }
    if compute.spot:
        wait_hours = compute.max_wait_hours or 2 * compute.max_run_hours
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = int(wait_hours * 3600)
    if not request["Environment"]:
        del request["Environment"]
    return request


class CloudWatchTail:
    """Print new events of a job's log streams (one per host) as they arrive."""

    def __init__(self, logs_client, name: str, echo: Callable[[str], None] = print) -> None:
        self.client, self.name, self.echo = logs_client, name, echo
        self.tokens: dict[str, str | None] = {}

    def poll(self) -> int:
        try:
            streams = self.client.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=self.name)
        except self.client.exceptions.ResourceNotFoundException:
            return 0  # the group appears once the first instance starts
        printed = 0
        for stream in streams.get("logStreams", []):
            stream_name = stream["logStreamName"]
            kwargs = {"logGroupName": LOG_GROUP, "logStreamName": stream_name, "startFromHead": True}
            if self.tokens.get(stream_name):
                kwargs["nextToken"] = self.tokens[stream_name]
            while True:
                page = self.client.get_log_events(**kwargs)
                for event in page["events"]:
                    self.echo(f"[{stream_name.removeprefix(self.name + '/')}] {event['message']}")
                    printed += 1
                token = page.get("nextForwardToken")
                self.tokens[stream_name] = token
                if not page["events"] or token == kwargs.get("nextToken"):
                    break
                kwargs["nextToken"] = token
        return printed


def wait_for_job(
    sagemaker_client, logs_client, name: str, poll_s: float = 30.0, echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """Wait for a terminal status while echoing logs; the description of a Completed job."""
    tail = CloudWatchTail(logs_client, name, echo)
    last_status = None
    while True:
        description = sagemaker_client.describe_training_job(TrainingJobName=name)
        tail.poll()
        status = (description["TrainingJobStatus"], description.get("SecondaryStatus"))
        if status != last_status:
            echo(f"training job {name}: {status[0]} ({status[1]})")
            last_status = status
        if status[0] in _TERMINAL:
            break
        time.sleep(poll_s)
    tail.poll()  # the last lines often arrive after the status changes
    if description["TrainingJobStatus"] != "Completed":
        reason = description.get("FailureReason") or "SageMaker gave no failure reason"
        raise TrainingJobError(
            f"SageMaker training job {name} ended {description['TrainingJobStatus']}: {reason} "
            f"(logs: CloudWatch {LOG_GROUP}/{name}/*)"
        )
    return description


def job_record(description: dict[str, Any]) -> TrainingJobRecord:
    """What the flow keeps about a finished job: ARN, billable seconds, final metrics."""
    return TrainingJobRecord(
        arn=description["TrainingJobArn"],
        name=description["TrainingJobName"],
        status=description["TrainingJobStatus"],
        billable_seconds=description.get("BillableTimeInSeconds"),
        training_seconds=description.get("TrainingTimeInSeconds"),
        spot=bool(description.get("EnableManagedSpotTraining")),
        instance_type=description.get("ResourceConfig", {}).get("InstanceType"),
        instance_count=description.get("ResourceConfig", {}).get("InstanceCount"),
        metrics={m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList", [])},
    )


def collect_train_folder(storage: Storage, prefixes: dict[str, str], name: str) -> TrainResult:
    """Publish the job's checkpoints and output files as the run's train folder (the local stage's layout)."""
    with stage_scratch("sagemaker-train") as work:
        _verified_checkpoints(open_storage(prefixes["checkpoints"]).materialize(work / CHECKPOINTS))
        output = open_storage(f"{prefixes['output']}/{name}/output/model").materialize(work / "output")
        for filename in OUTPUT_FILES:
            if not (output / filename).is_file():
                raise TrainingJobError(f"training job {name} completed without {filename} in its model output")
            shutil.move(str(output / filename), work / filename)
        shutil.rmtree(output)
        return TrainResult(
            checkpoint=storage.publish(work, TRAIN),
            summary=TrainSummary.model_validate_json((work / SUMMARY_FILE).read_text()),
            metrics=read_metrics(work / METRICS_FILE),
        )


def _verified_checkpoints(folder: Path) -> None:
    """Keep the complete checkpoints of a downloaded prefix, each file checked against its record.

    The prefix holds whatever the job's hosts left there (a spot interruption can leave a
    torn save): a folder without its record is dropped, a file that differs fails the step.
    """
    for checkpoint in sorted(p for p in folder.iterdir() if p.is_dir()):
        record = checkpoint / CHECKPOINT_RECORD
        if not record.is_file():
            print(f"not publishing {checkpoint.name}: it has no {CHECKPOINT_RECORD} (an interrupted save)", flush=True)
            shutil.rmtree(checkpoint)
            continue
        verify_checkpoint(checkpoint, json.loads(record.read_text()))


def code_folder(folder: Path) -> Path:
    """This checkout's `steps/` and `configs/` copied into `folder`, for the job's `code` channel.

    The image carries only dependencies (its tag is their hash); the code comes with
    each job, so a job always runs the code of the run that submitted it.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("steps", "configs"):
        shutil.copytree(REPO_ROOT / part, folder / part, ignore=ignore)
    return folder


def sagemaker_train_stage(
    config: TuneConfig,
    storage: Storage,
    dataset: StoredDir,
    tokenizer: StoredDir,
    name: str,
    clients: tuple[Any, Any] | None = None,
    poll_s: float = 30.0,
    resume_from: Sequence[str] = (),
) -> TrainResult:
    """Train as a SageMaker job; returns what `steps.train.stage.train_stage` returns, plus the job's record.

    `resume_from`: checkpoint roots of the run this one resumes; the newest complete
    checkpoint among them goes in as the `checkpoints` channel and training continues from it.
    """
    if storage.local_path is not None:
        raise TrainingJobError(
            "compute.train.target 'sagemaker' needs the run's files on S3: run with --datastore s3 "
            "(METAFLOW_DEFAULT_DATASTORE=s3)"
        )
    sagemaker_client, logs_client = clients or (boto3.client("sagemaker"), boto3.client("logs"))
    prefixes = job_prefixes(storage, name)
    with stage_scratch("sagemaker-submit") as scratch:  # the code and config channels, until uploaded
        (scratch / "config").mkdir()
        write_config(config, scratch / "config" / "config.json")
        channels = {
            "code": storage.publish(code_folder(scratch / "code"), f"sagemaker/{name}/code").uri,
            "config": storage.publish(scratch / "config", f"sagemaker/{name}/config").uri,
            "dataset": dataset.uri,
            "tokenizer": tokenizer.uri,
        }
    if config.model.base_model:
        if open_storage(config.model.base_model).local_path is not None:
            raise TrainingJobError(
                f"model.base_model = {config.model.base_model!r}: a SageMaker job reads the base model "
                "from S3; upload the folder and give its s3:// prefix"
            )
        channels["base_model"] = config.model.base_model
    found = newest_of(resume_from)
    if found is not None:
        channels["checkpoints"] = found.root
        print(f"the job resumes from {found.uri}", flush=True)
    request = build_request(config, name, channels, prefixes)
    arn = sagemaker_client.create_training_job(**request)["TrainingJobArn"]
    print(f"submitted SageMaker training job {arn}", flush=True)
    description = wait_for_job(sagemaker_client, logs_client, name, poll_s)
    result = collect_train_folder(storage, prefixes, name)
    return result.model_copy(update={"job": job_record(description)})
