"""Any stage as a SageMaker training job running our container, through the SageMaker Python SDK v3.

SageMaker has one job type that runs an arbitrary container to completion with S3
channels in and an S3 output: the training job, which runs train, convert and
evaluate alike (`TUNE_STAGE` names the stage's spec). `run_as_job` publishes the
resolved config and this checkout's code beside the run's files, makes each of the
stage's named inputs a channel (their references, hashes included, travel in the
config channel and the container checks every channel against its own), creates one
job with sagemaker-core's `TrainingJob.create` (outputs back to the run's storage,
uncompressed; a checkpointing stage's checkpoints synced into its own folder there,
`train/checkpoints`, where a retried job and a resumed run find them), waits while
echoing the job's CloudWatch logs (steps.dispatch.job_guard), and turns anything but
`Completed` into a `TrainingJobError` carrying SageMaker's failure reason. The job is
stopped if the step fails or is interrupted while waiting, and a retried step first
stops the job of its earlier attempt. What the job wrote to /opt/ml/model is then
published as the stage's outputs by the same code as a local run's, so no later step
can tell where a stage ran.

Why sagemaker-core and not `ModelTrainer`: `ModelTrainer` ships in `sagemaker-train`
(and the `sagemaker` 3.x meta package), which requires mlflow; every mlflow release on
the index either caps pyarrow below our pin (pyarrow==26.0.1) or needs an mlflow-skinny
that is not published, so it cannot be installed beside our pins. sagemaker-core 2.27.0
(the SDK v3 resources layer ModelTrainer itself drives) installs cleanly; its request
shapes are pydantic models, and botocore validates the request against the service model.

Secrets never enter the request: the job gets Secrets Manager ARNs/names in
`TUNE_SECRET_SOURCES` and the container reads the values itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
from pydantic import BaseModel
from sagemaker.core.resources import Tag, TrainingJob
from sagemaker.core.shapes import (
    AlgorithmSpecification,
    Channel,
    CheckpointConfig,
    DataSource,
    MetricDefinition,
    OutputDataConfig,
    ResourceConfig,
    S3DataSource,
    StoppingCondition,
)

from steps.config import TuneConfig, write_config
from steps.dispatch.job_guard import TrainingJobError, stop_predecessors, stopped_on_exit, wait_for_job
from steps.dispatch.job_names import JobName
from steps.dispatch.runner import Inputs, Place, publish_result, stage_inputs_record
from steps.formats.train_folder import CHECKPOINTS, list_complete
from steps.project_files import REPO_ROOT
from steps.results import SageMakerJobRecord
from steps.runtime.scratch import stage_scratch
from steps.runtime.stage_spec import StageSpec
from steps.runtime.storage import Storage, StoredDir, open_storage
from steps.train.progress_line import SAGEMAKER_METRIC_DEFINITIONS

CONTAINER_CHECKPOINTS = "/opt/ml/checkpoints"
SECRET_SOURCES_ENV = "TUNE_SECRET_SOURCES"
POLL_ENV = "TUNE_SAGEMAKER_POLL_S"
"""Seconds between DescribeTrainingJob calls while a step waits (default 30)."""
STAGE_ENV = "TUNE_STAGE"
"""Which stage's spec the container runs (`steps.stages.SPECS`); SageMaker always starts it as `<image> train`."""
INPUTS_FILE = "inputs.json"
"""In the config channel: the references of the job's input channels, which the container checks each against."""


OUTPUT_FOLDER = "sagemaker/output"
"""The jobs' S3OutputPath in the run's storage: SageMaker puts a job's /opt/ml/model in `<it>/<job>/output/model`."""


def _channel(name: str, uri: str) -> Channel:
    source = S3DataSource(
        s3_data_type="S3Prefix",
        s3_uri=uri.rstrip("/") + "/",
        # Every host needs the whole dataset: each rank picks its own blocks.
        s3_data_distribution_type="FullyReplicated",
    )
    return Channel(channel_name=name, data_source=DataSource(s3_data_source=source), input_mode="File")


def job_spec(
    spec: StageSpec,
    config: TuneConfig,
    name: JobName,
    channels: Mapping[str, str],
    output: str,
    checkpoints: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of `TrainingJob.create` for the stage `spec` as `config.compute.<spec.compute>` says.

    `output`: the S3OutputPath. `checkpoints`: the S3 prefix SageMaker keeps in step with /opt/ml/checkpoints
    (None: the stage writes no checkpoints, and a job would only download them for nothing)."""
    compute = getattr(config.compute, spec.compute)
    environment = {STAGE_ENV: spec.name}
    if compute.secrets:
        environment[SECRET_SOURCES_ENV] = ",".join(compute.secrets)
    stopping = StoppingCondition(max_runtime_in_seconds=int(compute.max_run_hours * 3600))
    if compute.spot:
        wait_hours = compute.max_wait_hours or 2 * compute.max_run_hours
        stopping.max_wait_time_in_seconds = int(wait_hours * 3600)
    algorithm = AlgorithmSpecification(training_image=compute.image, training_input_mode="File")
    if spec.checkpoints:  # the training loop's progress lines carry its metrics
        algorithm.metric_definitions = [
            MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in SAGEMAKER_METRIC_DEFINITIONS
        ]
    return {
        "training_job_name": name.name,
        "algorithm_specification": algorithm,
        "role_arn": compute.role_arn,
        "input_data_config": [_channel(channel, uri) for channel, uri in channels.items()],
        # CompressionType NONE: files land as they are, no model.tar.gz to unpack before the next step.
        "output_data_config": OutputDataConfig(s3_output_path=output, compression_type="NONE"),
        "resource_config": ResourceConfig(
            instance_type=compute.instance_type,
            instance_count=spec.hosts(config),
            volume_size_in_gb=compute.volume_gb,
        ),
        "stopping_condition": stopping,
        "enable_managed_spot_training": compute.spot,
        "environment": environment,
        "tags": [Tag(key="tune:job", value=name.name)],
    } | (
        {"checkpoint_config": CheckpointConfig(s3_uri=checkpoints, local_path=CONTAINER_CHECKPOINTS)}
        if checkpoints
        else {}
    )


def job_record(job: TrainingJob) -> SageMakerJobRecord:
    """What the flow keeps about a finished job: ARN, billable seconds, final metrics."""

    def known(value):  # sagemaker-core marks fields the service did not return as Unassigned
        return value if isinstance(value, (int, float, str)) else None

    metrics = job.final_metric_data_list if isinstance(job.final_metric_data_list, list) else []
    return SageMakerJobRecord(
        arn=job.training_job_arn,
        name=job.training_job_name,
        status=job.training_job_status,
        billable_seconds=known(job.billable_time_in_seconds),
        training_seconds=known(job.training_time_in_seconds),
        spot=bool(known(job.enable_managed_spot_training)),
        instance_type=known(job.resource_config.instance_type),
        instance_count=known(job.resource_config.instance_count),
        metrics={m.metric_name: m.value for m in metrics},
    )


def run_job(
    spec: dict[str, Any], name: JobName, session: boto3.Session, poll_s: float | None, timeout_s: float | None = None
) -> TrainingJob:
    """Create the job `spec` names `name` (after stopping a still-running earlier attempt: a job named with
    the same prefix) and wait for it, stopping it on any exit but completion. The Completed job.
    `poll_s` None: TUNE_SAGEMAKER_POLL_S, else 30 s."""
    poll_s = poll_s if poll_s is not None else float(os.environ.get(POLL_ENV, "30"))
    stop_predecessors(name.prefix, session, poll_s=min(poll_s, 5.0))
    job = TrainingJob.create(**spec, session=session)
    print(f"submitted SageMaker job {job.training_job_arn}", flush=True)
    with stopped_on_exit(job):
        return wait_for_job(job, poll_s, timeout_s=timeout_s)


def wait_limit_s(config: TuneConfig, section: str) -> float:
    """How long a step waits for its job: the job's own limits (SageMaker stops it then) and an hour's grace."""
    compute = getattr(config.compute, section)
    hours = (compute.max_wait_hours or 2 * compute.max_run_hours) if compute.spot else compute.max_run_hours
    return hours * 3600 + 3600


def code_folder(folder: Path) -> Path:
    """This checkout's `steps/` and `configs/` copied into `folder`, for the job's `code` channel.

    The image carries only dependencies (its tag is their hash); the code comes with
    each job, so a job always runs the code of the run that submitted it.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("steps", "configs"):
        shutil.copytree(REPO_ROOT / part, folder / part, ignore=ignore)
    return folder


def job_channels(spec: StageSpec, config: TuneConfig, storage: Storage, name: JobName, inputs: Inputs) -> dict:
    """The job's channels: this checkout's code, the config with the inputs' references, and one per input."""
    if storage.local_path is not None:
        raise TrainingJobError(
            f"compute.{spec.compute}.target 'sagemaker' needs the run's files on S3: run with --datastore s3 "
            "(METAFLOW_DEFAULT_DATASTORE=s3)"
        )
    refs = {key: inputs.get(key) for key in spec.inputs}
    for key, ref in refs.items():
        if ref is not None and not isinstance(ref, StoredDir):
            raise TrainingJobError(f"stage {spec.name}: input {key!r} is a list of folders, which a job cannot take")
    with stage_scratch("sagemaker-submit") as scratch:  # the code and config channels, until uploaded
        (scratch / "config").mkdir()
        write_config(config, scratch / "config" / "config.json")
        (scratch / "config" / INPUTS_FILE).write_text(stage_inputs_record(refs))
        channels = {
            "code": storage.publish(code_folder(scratch / "code"), f"sagemaker/{name}/code").uri,
            "config": storage.publish(scratch / "config", f"sagemaker/{name}/config").uri,
        }
    return channels | {key: ref.uri for key, ref in refs.items() if ref is not None}


def run_as_job(
    spec: StageSpec,
    config: TuneConfig,
    place: Place,
    inputs: Inputs,
    params: Mapping[str, Any],
    session: boto3.Session | None = None,
    poll_s: float | None = None,
) -> BaseModel:
    """Run `spec` as a SageMaker job named `place.job_name`; the result a local run returns, with the job's record.

    A checkpointing stage syncs its checkpoints with the stage's own `checkpoints` folder in the run's storage
    (a retried step's job continues from them); in a resumed run, the resumed run's newest checkpoints come in
    as the `resume` channel.
    """
    storage, folder, name = place.storage, spec.stored_as(params), place.job_name
    if name is None:
        raise TrainingJobError(f"stage {spec.name} runs as a SageMaker job, but the step gave it no job name")
    channels = job_channels(spec, config, storage, name, inputs)
    checkpoints = storage.uri(f"{folder}/{CHECKPOINTS}") if spec.checkpoints else None
    if checkpoints and place.resumes is not None:
        earlier = place.resumes.uri(f"{folder}/{CHECKPOINTS}")
        if list_complete(earlier):
            channels["resume"] = earlier
            print(f"the job resumes from the checkpoints of {earlier}", flush=True)
    request = job_spec(spec, config, name, channels, storage.uri(OUTPUT_FOLDER), checkpoints)
    job = run_job(request, name, session or boto3.Session(), poll_s, wait_limit_s(config, spec.compute))
    with stage_scratch(f"sagemaker-{spec.name}") as work:  # the job's output, until published
        out = open_storage(storage.uri(f"{OUTPUT_FOLDER}/{name}/output/model")).materialize(work / "out")
        return publish_result(spec, storage, folder, out, inputs, {spec.job_field: job_record(job)})
