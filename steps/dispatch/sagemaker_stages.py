"""Convert and evaluate as SageMaker jobs: the same stage, in our container, publishing the same folder.

SageMaker has one job type that runs an arbitrary container to completion with S3
channels in and an S3 output: the training job. Convert and evaluate use it too
(`TUNE_STAGE` tells the container which stage to run). The job writes the stage's
output folder to /opt/ml/model; SageMaker uploads it uncompressed, and the step
publishes it as the run's `convert/model` or `evaluate` folder exactly as the local
stage does, so the next step cannot tell where it ran.
"""

from __future__ import annotations

from pathlib import Path

import boto3

from steps.config import TuneConfig
from steps.convert.stage import publish_model
from steps.dispatch.job_names import JobName
from steps.dispatch.sagemaker_job import common_channels, job_prefixes, job_record, job_spec, run_job, wait_limit_s
from steps.evaluate.stage import publish_evaluation
from steps.results import ConvertResult, EvaluateResult, TrainSummary
from steps.runtime.scratch import stage_scratch
from steps.runtime.storage import Storage, StoredDir, open_storage

TRAIN_SUMMARY_FILE = "train_summary.json"


def _run(
    config: TuneConfig, storage: Storage, channels: dict[str, str], name: JobName, step: str, session, poll_s, work
):
    """Run the job; the job and a folder under `work` holding what it wrote to /opt/ml/model."""
    prefixes = job_prefixes(storage, name)
    spec = job_spec(config, name, channels, prefixes, step=step)
    job = run_job(spec, name, session or boto3.Session(), poll_s, wait_limit_s(config, step))
    return job, open_storage(f"{prefixes['output']}/{name}/output/model").materialize(Path(work) / "out")


def sagemaker_evaluate_stage(
    config: TuneConfig,
    storage: Storage,
    model: StoredDir,
    dataset: StoredDir,
    train_summary: TrainSummary,
    name: JobName,
    session: boto3.Session | None = None,
    poll_s: float | None = None,
    base_model_copy: StoredDir | None = None,
) -> EvaluateResult:
    """Evaluate as a SageMaker job; returns what `steps.evaluate.stage.evaluate_stage` returns."""
    channels = common_channels(config, storage, name, "evaluate", base_model_copy)
    with stage_scratch("sagemaker-evaluate") as work:  # the train summary channel, then the job's output
        (work / "summary").mkdir()
        (work / "summary" / TRAIN_SUMMARY_FILE).write_text(train_summary.model_dump_json())
        channels |= {
            "model": model.uri,
            "dataset": dataset.uri,
            "train_summary": storage.publish(work / "summary", f"sagemaker/{name}/train_summary").uri,
        }
        job, out = _run(config, storage, channels, name, "evaluate", session, poll_s, work)
        return publish_evaluation(storage, out).model_copy(update={"job": job_record(job)})


def sagemaker_convert_stage(
    config: TuneConfig,
    storage: Storage,
    checkpoint: StoredDir,
    tokenizer: StoredDir,
    name: JobName,
    session: boto3.Session | None = None,
    poll_s: float | None = None,
) -> ConvertResult:
    """Convert as a SageMaker job; returns what `steps.convert.stage.convert_stage` returns."""
    channels = common_channels(config, storage, name, "convert")
    channels |= {"train": checkpoint.uri, "tokenizer": tokenizer.uri}
    with stage_scratch("sagemaker-convert") as work:  # the job's output, until published
        job, out = _run(config, storage, channels, name, "convert", session, poll_s, work)
        return publish_model(storage, out).model_copy(update={"job": job_record(job)})
