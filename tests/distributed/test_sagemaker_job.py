"""The train and convert stages as SageMaker training jobs, against moto's SageMaker, S3, Logs and Secrets Manager.

The job's hosts run our container entrypoint on CPU with an emulated /opt/ml tree
(tests/support/sagemaker_emulator.py); convert then consumes what the job produced.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from steps.config import TuneConfig
from steps.dispatch.job_names import training_job_name
from steps.dispatch.runner import Place, run_stage
from steps.dispatch.sagemaker_job import SECRET_SOURCES_ENV, STAGE_ENV, TrainingJobError, run_as_job
from steps.runtime.storage import Storage, StoredDir, open_storage
from steps.stages import CONVERT, TRAIN
from tests.support.aws import IMAGE, ROLE
from tests.support.sagemaker_emulator import EmulatedSageMaker

CANARY = "hf_CANARY_d0n0tl3ak_7f3a9c"


def _sagemaker_config(debug_config: TuneConfig, secret_arn: str, **train) -> TuneConfig:
    raw = debug_config.model_dump()
    raw["train"].update({"num_nodes": 2, "nproc_per_node": 1, "max_steps": 6, "checkpoint_every": 3, **train})
    raw["compute"]["convert"] = {
        "target": "sagemaker",
        "image": IMAGE,
        "instance_type": "ml.m5.4xlarge",
        "role_arn": ROLE,
        "secrets": [secret_arn],
    }
    raw["compute"]["train"] = {
        "target": "sagemaker",
        "image": IMAGE,
        "instance_type": "ml.p4d.24xlarge",
        "role_arn": ROLE,
        "spot": True,
        "secrets": [secret_arn],
    }
    return TuneConfig.model_validate(raw)


@pytest.fixture
def run_on_s3(aws_env, prepared: Path, request) -> tuple[Storage, StoredDir, StoredDir, str]:
    """Run storage on moto S3 with the debug dataset and tokenizer published, and a canary secret."""
    bucket = f"runs-{request.node.name.replace('_', '-')[:40]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    storage = open_storage(f"s3://{bucket}/metaflow/TuneFlow/7/files")
    dataset = storage.publish(prepared / "dataset", "prepare/dataset")
    tokenizer = storage.publish(prepared / "tokenizer", "prepare/tokenizer")
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"tune/{bucket}/hub", SecretString=json.dumps({"HF_TOKEN": CANARY})
    )
    return storage, dataset, tokenizer, secret["ARN"]


@pytest.mark.slow
def test_job_on_two_emulated_hosts_trains_and_convert_consumes_it(
    run_on_s3, debug_config, tmp_path, capsys, monkeypatch
) -> None:
    storage, dataset, tokenizer, secret_arn = run_on_s3
    config = _sagemaker_config(debug_config, secret_arn, keep_checkpoints=1)
    client = EmulatedSageMaker(tmp_path).install(monkeypatch)
    name = training_job_name("TuneFlow", "7", 0)
    inputs = {"dataset": dataset, "tokenizer": tokenizer}

    result = run_as_job(TRAIN, config, Place(storage, name), inputs, {}, session=client.session, poll_s=0.1)

    hosts = client.hosts_finished
    assert [h.returncode for h in hosts] == [0, 0], hosts[0].stdout[-3000:] + hosts[1].stdout[-3000:]
    (request,) = client.requests
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=name.name)
    assert CANARY not in json.dumps(request) and CANARY not in json.dumps(described, default=str)
    assert request["Environment"] == {
        SECRET_SOURCES_ENV: secret_arn,
        STAGE_ENV: "train",
    }  # a reference, never the value
    assert "HyperParameters" not in request
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    assert channels["dataset"] == dataset.uri + "/" and channels["tokenizer"] == tokenizer.uri + "/"
    assert set(channels) == {"code", "config", "dataset", "tokenizer"}
    assert all(uri.startswith(storage.root + "/") for uri in channels.values())
    assert request["CheckpointConfig"] == {
        "S3Uri": f"{storage.root}/train/checkpoints",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["OutputDataConfig"] == {
        "S3OutputPath": f"{storage.root}/sagemaker/output",
        "CompressionType": "NONE",
    }
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert request["ResourceConfig"]["InstanceCount"] == 2

    # Every host pruned its own checkpoint folder, not only the main host (where the records are).
    for host in ("host-0", "host-1"):
        kept = sorted(p.name for p in (tmp_path / name.name / host / "opt/ml/checkpoints").glob("step-*"))
        assert kept == ["step-0000006"], (host, kept)
    assert result.train_job.arn == described["TrainingJobArn"] and result.train_job.status == "Completed"
    assert result.train_summary.world_size == 2 and result.train_summary.steps == 6
    assert [m.step for m in result.train_metrics][-1] == 6
    assert result.checkpoint.uri == storage.uri("train")
    # The job's log lines (both hosts) reached the step's output through CloudWatch Logs.
    printed = capsys.readouterr().out
    assert "[algo-1-" in printed and "[algo-2-" in printed and "step      6/6" in printed

    here = config.with_overrides(**{"compute.convert": {"target": "local"}})
    converted = run_stage(CONVERT, here, Place(storage), {"checkpoint": result.checkpoint, "tokenizer": tokenizer})
    assert converted.conversion.logits_match is True
    assert converted.conversion.trained_world_size == 2
    # convert as a SageMaker job (compute.convert.target: sagemaker) publishes the same model folder.
    place = Place(storage, training_job_name("TuneFlow", "7", 0, "convert"))
    to_convert = {"checkpoint": result.checkpoint, "tokenizer": tokenizer}
    remote = run_as_job(CONVERT, config, place, to_convert, {}, poll_s=0.1)
    assert client.requests[-1]["Environment"][STAGE_ENV] == "convert"
    assert client.requests[-1]["ResourceConfig"]["InstanceCount"] == 1
    assert remote.convert_job.status == "Completed" and remote.conversion.logits_match is True
    assert remote.model.uri == converted.model.uri and remote.model.files == converted.model.files

    # `resume` of this run (a new run id, a new job): its checkpoints go in as a channel and training continues.
    run_8 = open_storage(storage.root.replace("/7/files", "/8/files"))
    resumed = Place(run_8, training_job_name("TuneFlow", "8", 0), resumes=storage)
    longer = _sagemaker_config(debug_config, secret_arn, max_steps=9)
    again = run_as_job(TRAIN, longer, resumed, inputs, {}, session=client.session, poll_s=0.1)
    resumed_channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in client.requests[-1]["InputDataConfig"]
    }
    assert resumed_channels["resume"].rstrip("/") == storage.uri("train/checkpoints")
    assert again.train_summary.resumed_from_step == 6 and again.train_summary.steps == 9


def test_failed_host_fails_the_step_with_the_job_failure_reason(run_on_s3, debug_config, tmp_path, monkeypatch) -> None:
    storage, dataset, tokenizer, secret_arn = run_on_s3
    config = _sagemaker_config(debug_config, secret_arn, num_nodes=1)
    # A dataset channel that holds no blocks: the container fails before training starts.
    not_a_dataset = tmp_path / "not-a-dataset"
    not_a_dataset.mkdir()
    (not_a_dataset / "readme.txt").write_text("no blocks here")
    broken = storage.publish(not_a_dataset, "prepare/not-a-dataset")
    client = EmulatedSageMaker(tmp_path).install(monkeypatch)
    name = training_job_name("TuneFlow", "7", 1)
    inputs = {"dataset": broken, "tokenizer": tokenizer}
    with pytest.raises(TrainingJobError) as failure:
        run_as_job(TRAIN, config, Place(storage, name), inputs, {}, session=client.session, poll_s=0.1)
    assert client.hosts_finished[0].returncode != 0
    message = str(failure.value)
    assert f"job {name} ended Failed" in message and "LaunchError" in message
    assert "FileNotFoundError" in message  # the root cause from the rank, not only torchrun's exit code
    assert CANARY not in client.hosts_finished[0].stdout
