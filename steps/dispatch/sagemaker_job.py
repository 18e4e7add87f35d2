"""The train step as a SageMaker training job running our container, through the SageMaker Python SDK v3.

The step publishes the resolved config beside the run's files, creates one training
job with sagemaker-core's `TrainingJob.create` (channels from the run's S3 storage,
checkpoints and outputs back to it, uncompressed), waits while echoing the job's
CloudWatch logs (steps.dispatch.job_guard), and turns anything but `Completed` into a
`TrainingJobError` carrying SageMaker's failure reason. The job is stopped if the
step fails or is interrupted while waiting, and a retried step first stops the job
of its earlier attempt. The finished checkpoints and training records are then
published as the run's `train` folder, the same thing the local train stage
returns, so convert cannot tell where training ran.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
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
from steps.dispatch.job_names import CHECKPOINTS_FOLDER, JobName
from steps.formats.gguf_source import is_gguf
from steps.formats.model_folder import BASE_MODEL, resolve_base_model
from steps.formats.train_folder import (
    CHECKPOINTS,
    METRICS_FILE,
    OUTPUT_FILES,
    SUMMARY_FILE,
    keep_verified_checkpoints,
    newest_of,
)
from steps.project_files import REPO_ROOT
from steps.results import TrainingJobRecord, TrainResult, TrainSummary
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import MANIFEST, Storage, StoredDir, open_storage
from steps.train.progress_line import SAGEMAKER_METRIC_DEFINITIONS
from steps.train.stage import TRAIN, read_metrics

CONTAINER_CHECKPOINTS = "/opt/ml/checkpoints"
SECRET_SOURCES_ENV = "TUNE_SECRET_SOURCES"
POLL_ENV = "TUNE_SAGEMAKER_POLL_S"
"""Seconds between DescribeTrainingJob calls while a step waits (default 30)."""
STAGE_ENV = "TUNE_STAGE"
"""Which stage the container runs; SageMaker always starts it as `<image> train`."""


def job_prefixes(storage: Storage, name: JobName | str) -> dict[str, str]:
    """S3 prefixes of one job inside the run's storage.

    Checkpoints are per run, not per job: a retried step's new job resumes from them.
    """
    return {
        "config": storage.uri(f"sagemaker/{name}/config"),
        "output": storage.uri("sagemaker/output"),
        "checkpoints": storage.uri(CHECKPOINTS_FOLDER),
    }


def _channel(name: str, uri: str) -> Channel:
    source = S3DataSource(
        s3_data_type="S3Prefix",
        s3_uri=uri.rstrip("/") + "/",
        # Every host needs the whole dataset: each rank picks its own blocks.
        s3_data_distribution_type="FullyReplicated",
    )
    return Channel(channel_name=name, data_source=DataSource(s3_data_source=source), input_mode="File")


def job_hosts(config: TuneConfig, step: str) -> int:
    """The hosts of a step's job: train.num_nodes, compute.evaluate.instance_count, one for convert (a single
    process reading one checkpoint and writing one folder: a second host would have nothing to do)."""
    if step == "train":
        return config.train.num_nodes
    return config.compute.evaluate.instance_count if step == "evaluate" else 1


def job_spec(
    config: TuneConfig,
    name: JobName,
    channels: dict[str, str],
    prefixes: dict[str, str],
    step: str = "train",
) -> dict[str, Any]:
    """Keyword arguments of `TrainingJob.create` for `config.compute.<step>` (target sagemaker)."""
    compute = getattr(config.compute, step)
    environment = {STAGE_ENV: step}
    if compute.secrets:
        environment[SECRET_SOURCES_ENV] = ",".join(compute.secrets)
    stopping = StoppingCondition(max_runtime_in_seconds=int(compute.max_run_hours * 3600))
    if compute.spot:
        wait_hours = compute.max_wait_hours or 2 * compute.max_run_hours
        stopping.max_wait_time_in_seconds = int(wait_hours * 3600)
    algorithm = AlgorithmSpecification(training_image=compute.image, training_input_mode="File")
    if step == "train":
        algorithm.metric_definitions = [
            MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in SAGEMAKER_METRIC_DEFINITIONS
        ]
    return {
        "training_job_name": name.name,
        "algorithm_specification": algorithm,
        "role_arn": compute.role_arn,
        "input_data_config": [_channel(channel, uri) for channel, uri in channels.items()],
        # CompressionType NONE: files land as they are, no model.tar.gz to unpack before the next step.
        "output_data_config": OutputDataConfig(s3_output_path=prefixes["output"], compression_type="NONE"),
        "resource_config": ResourceConfig(
            instance_type=compute.instance_type,
            instance_count=job_hosts(config, step),
            volume_size_in_gb=compute.volume_gb,
        ),
        "stopping_condition": stopping,
        "enable_managed_spot_training": compute.spot,
        "environment": environment,
        "tags": [Tag(key="tune:job", value=name.name)],
    } | (  # only training writes checkpoints; convert and evaluate would download all of them for nothing
        {"checkpoint_config": CheckpointConfig(s3_uri=prefixes["checkpoints"], local_path=CONTAINER_CHECKPOINTS)}
        if step == "train"
        else {}
    )


def job_record(job: TrainingJob) -> TrainingJobRecord:
    """What the flow keeps about a finished job: ARN, billable seconds, final metrics."""

    def known(value):  # sagemaker-core marks fields the service did not return as Unassigned
        return value if isinstance(value, (int, float, str)) else None

    metrics = job.final_metric_data_list if isinstance(job.final_metric_data_list, list) else []
    return TrainingJobRecord(
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


def wait_limit_s(config: TuneConfig, step: str) -> float:
    """How long a step waits for its job: the job's own limits (SageMaker stops it then) and an hour's grace."""
    compute = getattr(config.compute, step)
    hours = (compute.max_wait_hours or 2 * compute.max_run_hours) if compute.spot else compute.max_run_hours
    return hours * 3600 + 3600


def collect_train_folder(storage: Storage, prefixes: dict[str, str], name: JobName) -> TrainResult:
    """Publish the job's checkpoints and output files as the run's train folder (the local stage's layout)."""
    with stage_scratch("sagemaker-train") as work:
        keep_verified_checkpoints(open_storage(prefixes["checkpoints"]).materialize(work / CHECKPOINTS))
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


def code_folder(folder: Path) -> Path:
    """This checkout's `steps/` and `configs/` copied into `folder`, for the job's `code` channel.

    The image carries only dependencies (its tag is their hash); the code comes with
    each job, so a job always runs the code of the run that submitted it.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("steps", "configs"):
        shutil.copytree(REPO_ROOT / part, folder / part, ignore=ignore)
    return folder


def common_channels(
    config: TuneConfig, storage: Storage, name: JobName, step: str, base_model_copy: StoredDir | None = None
) -> dict[str, str]:
    """The code and config channels every job gets, and the base model when there is one (`base_model_copy`:
    prepare's dequantized copy of a GGUF file, `PrepareResult.base_model_copy`)."""
    if storage.local_path is not None:
        raise TrainingJobError(
            f"compute.{step}.target 'sagemaker' needs the run's files on S3: run with --datastore s3 "
            "(METAFLOW_DEFAULT_DATASTORE=s3)"
        )
    with stage_scratch("sagemaker-submit") as scratch:  # the code and config channels, until uploaded
        (scratch / "config").mkdir()
        write_config(config, scratch / "config" / "config.json")
        channels = {
            "code": storage.publish(code_folder(scratch / "code"), f"sagemaker/{name}/code").uri,
            "config": storage.publish(scratch / "config", f"sagemaker/{name}/config").uri,
        }
    if config.model.base_model and step != "convert":  # convert needs only the checkpoint and the tokenizer
        channels["base_model"] = _base_model_channel(config.model.base_model, storage, base_model_copy)
    return channels


def _base_model_channel(spec: str, storage: Storage, copy: StoredDir | None) -> str:
    """The S3 prefix a job reads the base model from: the run's dequantized copy of a GGUF file, or the given one."""
    if is_gguf(spec):
        if copy is not None and open_storage(copy.uri).get_text(MANIFEST) is not None:
            return copy.uri  # prepare's copy: in a resumed run, in the files of the run it resumes
        if storage.get_text(f"{BASE_MODEL}/{MANIFEST}") is None:  # e.g. a resumed run of a run before copies
            with stage_scratch("sagemaker-base-model") as scratch:
                resolve_base_model(spec, scratch / "base-model", storage)  # dequantizes and publishes it
        return storage.uri(BASE_MODEL)
    if open_storage(spec).local_path is not None:
        raise TrainingJobError(
            f"model.base_model = {spec!r}: a SageMaker job reads the base model from S3; "
            "upload the folder and give its s3:// prefix"
        )
    return spec


def sagemaker_train_stage(
    config: TuneConfig,
    storage: Storage,
    dataset: StoredDir,
    tokenizer: StoredDir,
    name: JobName,
    session: boto3.Session | None = None,
    poll_s: float | None = None,
    resume_from: Sequence[str] = (),
    base_model_copy: StoredDir | None = None,
) -> TrainResult:
    """Train as a SageMaker job; returns what `steps.train.stage.train_stage` returns, plus the job's record.

    `resume_from`: checkpoint roots of the run this one resumes; the newest complete
    checkpoint among them goes in as the `checkpoints` channel and training continues from it.
    """
    channels = common_channels(config, storage, name, "train", base_model_copy)
    channels |= {"dataset": dataset.uri, "tokenizer": tokenizer.uri}
    found = newest_of(resume_from)
    if found is not None:
        channels["checkpoints"] = found.root
        print(f"the job resumes from {found.uri}", flush=True)
    prefixes = job_prefixes(storage, name)
    spec = job_spec(config, name, channels, prefixes)
    job = run_job(spec, name, session or boto3.Session(), poll_s, wait_limit_s(config, "train"))
    result = collect_train_folder(storage, prefixes, name)
    return result.model_copy(update={"job": job_record(job)})
