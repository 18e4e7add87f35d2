"""The flow with train and evaluate as SageMaker jobs (prepare and convert local), against moto on 127.0.0.1, on
Metaflow's S3 datastore: the run's files and Metaflow's own artifacts in the bucket, none in a local .metaflow folder.

The jobs' hosts run our container entrypoint on emulated /opt/ml trees in this test
process (tests/support/sagemaker_emulator.py, server-side), so the flow's own
subprocesses talk to SageMaker only through the SDK and the HTTP API.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import yaml

from steps.config import load_config
from steps.dispatch.runner import Place, run_stage
from steps.dispatch.sagemaker_job import POLL_ENV, SECRET_SOURCES_ENV, STAGE_ENV
from steps.project_files import DEBUG_CONFIG, FLOW_FILE
from steps.runtime.storage import StoredDir, fetch, open_storage
from steps.stages import EVALUATE
from tests.support.aws import IMAGE, ROLE
from tests.support.sagemaker_emulator import EmulatedSageMaker

BUCKET = "tune-flow-sagemaker"
ROOT = f"s3://{BUCKET}/metaflow"
CANARY = "hf_CANARY_fl0w_n0tl3ak_41c2"


@pytest.mark.slow
def test_train_and_evaluate_on_sagemaker_end_to_end(aws_env: dict, tmp_path: Path, monkeypatch) -> None:
    from metaflow import Run, Runner, namespace

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    secret = boto3.client("secretsmanager").create_secret(
        Name="tune/flow/hub", SecretString=json.dumps({"HF_TOKEN": CANARY})
    )["ARN"]
    sagemaker = {"target": "sagemaker", "image": IMAGE, "role_arn": ROLE, "secrets": [secret]}
    raw = yaml.safe_load(DEBUG_CONFIG.read_text())
    raw["train"].update({"max_steps": 4, "checkpoint_every": 2, "warmup_steps": 1, "log_every": 2})
    raw["data"].update({"eval_prompts": 2})
    # Evaluate on two emulated hosts of one rank each: torchrun across hosts, as training (same cost as 1 x 2).
    raw["evaluate"].update({"engines": ["hf"], "perplexity_blocks": 8, "nproc": 1})
    raw["compute"] = {
        "train": {**sagemaker, "instance_type": "ml.p4d.24xlarge", "spot": True},
        "evaluate": {**sagemaker, "instance_type": "ml.g5.12xlarge", "instance_count": 2},
    }
    config_path = tmp_path / "sagemaker.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    emulator = EmulatedSageMaker(tmp_path / "hosts").install(monkeypatch)
    env = {
        **aws_env,
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": ROOT,
        "METAFLOW_DEFAULT_METADATA": "local",
        POLL_ENV: "0.5",
    }
    temp = tmp_path / "tmp"  # the run's temporary folders, to see that each stage removed its own
    temp.mkdir()
    env["TMPDIR"] = str(temp)
    options = [("config", str(config_path))]
    with Runner(str(FLOW_FILE), show_output=False, cwd=str(tmp_path), env=env, config=options) as runner:
        result = runner.run()
        assert result.status == "successful", result.stdout[-4000:] + result.stderr[-4000:]
        pathspec = result.run.pathspec

    # Two jobs, train then evaluate, each running the stage its environment names.
    assert [r["Environment"][STAGE_ENV] for r in emulator.requests] == ["train", "evaluate"]
    assert [r["ResourceConfig"]["InstanceCount"] for r in emulator.requests] == [1, 2]
    assert [h.returncode for h in emulator.hosts_finished] == [0, 0]  # the evaluate job's two hosts
    # SageMaker uploads every host's /opt/ml/model into one prefix: only the first host wrote there.
    evaluate_hosts = tmp_path / "hosts" / emulator.requests[1]["TrainingJobName"]
    assert not any((evaluate_hosts / "host-1" / "opt" / "ml" / "model").glob("*"))
    for request in emulator.requests:
        assert request["Environment"][SECRET_SOURCES_ENV] == secret and "HyperParameters" not in request
    described = [
        boto3.client("sagemaker").describe_training_job(TrainingJobName=r["TrainingJobName"]) for r in emulator.requests
    ]
    assert [d["TrainingJobStatus"] for d in described] == ["Completed", "Completed"]
    # The canary secret is in no request and no job description (nor in the hosts' output).
    assert CANARY not in json.dumps(emulator.requests) and CANARY not in json.dumps(described, default=str)
    assert all(CANARY not in host.stdout for host in emulator.hosts_finished)

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # the local metadata lives in <cwd>/.metaflow
    namespace(None)
    run = Run(pathspec)
    assert run.successful
    end = run["end"].task.data
    # Fetched inputs, base-model copies, checkpoint staging, outputs: gone once each local stage ended.
    assert sorted(p.name for p in temp.glob("tune-*")) == []
    run_files = f"{ROOT}/TuneFlow/{run.id}/files"
    for name, ref in end.references.items():
        assert ref["uri"].startswith(run_files + "/"), (name, ref["uri"])
    model = fetch(StoredDir.from_dict(end.references["model"]), tmp_path / "model")  # hashes checked
    assert (model / "model.safetensors").is_file()
    assert end.conversion["logits_match"] is True and end.train_summary["steps"] == 4
    # Metaflow's own artifacts are in the same bucket, not in a local .metaflow folder.
    keys = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="metaflow/TuneFlow/")["KeyCount"]
    assert keys > 0 and not (tmp_path / ".metaflow" / "TuneFlow" / run.id / "end").exists()
    assert run["evaluate"].task.data.evaluate_job["status"] == "Completed"
    assert run["evaluate"].task.data.evaluate_job["instance_count"] == 2
    assert end.eval_summary["world_size"] == 2  # one evaluation over the ranks of both hosts
    assert run["train"].task.data.train_job["status"] == "Completed"
    remote = fetch(StoredDir.from_dict(end.references["evaluation"]), tmp_path / "remote-evaluation")

    # The same stage run locally on the same model: the end step cannot tell the two apart.
    config = load_config(config_path).with_overrides(**{"compute.evaluate": {"target": "local"}})
    local_storage = open_storage(str(tmp_path / "local-run"))
    inputs = {"model": end.references["model"], "dataset": end.references["dataset"]}
    local = run_stage(EVALUATE, config, Place(local_storage), inputs)
    local_folder = local_storage.local_path / "evaluate"
    # The same files, but for the node log, which only a local launch keeps (a job's is in CloudWatch Logs).
    local_files = sorted(p.name for p in local_folder.iterdir() if p.name != "logs")
    assert sorted(p.name for p in remote.iterdir()) == local_files
    assert set(end.eval_summary) == set(local.eval_summary.model_dump())
    for table in (p.name for p in remote.glob("*.parquet")):
        assert pq.read_schema(remote / table) == pq.read_schema(local_folder / table), table
        # Every prompt and probe once, however many hosts shared them.
        assert pq.read_metadata(remote / table).num_rows == pq.read_metadata(local_folder / table).num_rows, table
