"""What Metaflow sends to AWS Batch and Kubernetes for steps the config dispatches.

Batch: the flow runs against a moto server whose recorder keeps every request;
the RegisterJobDefinition and SubmitJob bodies Metaflow sent are read back from
it (moto has no Docker here, so the job itself fails, and so does the run; that is
expected). Kubernetes: `argo-workflows create --only-json` prints the workflow
template with the pod and JobSet specs, without a cluster.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from steps.compute import train_tasks
from steps.config import validate_config

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOW = str(REPO_ROOT / "flows" / "tune_flow.py")
DEBUG = yaml.safe_load((REPO_ROOT / "configs" / "debug.yaml").read_text())
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tune:8848ede928a42e2b"


def _config(path: Path, compute: dict, **train) -> Path:
    """The debug pipeline (fast prepare) with the compute section of an example config."""
    raw = {key: dict(value) for key, value in DEBUG.items()}
    raw["train"].update(train)
    raw["compute"] = compute
    validate_config(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def recording_aws(tmp_path_factory):
    """A moto server in its own process recording every request, with a Batch queue and an S3 datastore."""
    import boto3

    home = tmp_path_factory.mktemp("dispatch")
    recording = home / "moto_recording.jsonl"
    from steps.launch import free_port

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(recording)}
    server = subprocess.Popen(
        [shutil.which("moto_server"), "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "METAFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    clients = {
        name: boto3.client(
            name,
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name in ("s3", "ec2", "iam", "batch")
    }
    for _ in range(100):
        try:
            clients["s3"].create_bucket(Bucket="tune-metaflow")
            break
        except Exception:  # the server is still starting
            time.sleep(0.1)
    # Metaflow reads the platform (EC2/Fargate) from the queue's compute environment.
    ec2 = clients["ec2"]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="tune", Description="tune", VpcId=vpc)["GroupId"]
    role = clients["iam"].create_role(RoleName="tune-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = clients["iam"].create_instance_profile(InstanceProfileName="tune-ecs")["InstanceProfile"]["Arn"]
    environment = clients["batch"].create_compute_environment(
        computeEnvironmentName="tune-gpu",
        type="MANAGED",
        state="ENABLED",
        serviceRole=role,
        computeResources={
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 8,
            "instanceTypes": ["optimal"],
            "subnets": [subnet],
            "securityGroupIds": [group],
            "instanceRole": profile,
        },
    )
    for queue in ("tune-gpu", "tune-gpu-multinode"):
        clients["batch"].create_job_queue(
            jobQueueName=queue,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}],
        )
    flow_env = {
        **os.environ,
        **aws,
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": "s3://tune-metaflow/metaflow",
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_BATCH_JOB_QUEUE": "tune-gpu",
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": role,
        "METAFLOW_KUBERNETES_NAMESPACE": "default",
    }
    try:
        yield {"home": home, "endpoint": endpoint, "env": flow_env}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _recorded(endpoint: str, path: str) -> list[dict]:
    """Bodies of the recorded requests to `path` (e.g. /v1/submitjob)."""
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording") as response:
        lines = response.read().decode().splitlines()
    bodies = []
    for line in lines:
        entry = json.loads(line)
        if entry["url"].lower().endswith(path):
            body = base64.b64decode(entry["body"]).decode() if entry.get("body_encoded") else entry["body"]
            bodies.append(json.loads(body))
    return bodies


def _run_flow(aws: dict, config: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, FLOW, "--config", "config", str(config), *command],
        cwd=aws["home"],
        env=aws["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _recording(aws: dict, on: bool) -> None:
    import urllib.request

    action = "start-recording" if on else "stop-recording"
    urllib.request.urlopen(urllib.request.Request(f"{aws['endpoint']}/moto-api/recorder/{action}", method="POST"))


def _requirements(node: dict) -> dict[str, str]:
    return {r["type"]: r["value"] for r in node["containerOverrides"]["resourceRequirements"]}


@pytest.mark.slow
def test_batch_single_and_multi_node_requests(recording_aws) -> None:
    example = yaml.safe_load((REPO_ROOT / "configs" / "batch.yaml").read_text())["compute"]
    _recording(recording_aws, True)
    single = _config(recording_aws["home"] / "single.yaml", {"prepare": {**example["evaluate"], "queue": "tune-gpu"}})
    proc = _run_flow(recording_aws, single, "run")
    assert proc.returncode != 0 and "Step prepare" in proc.stdout + proc.stderr  # moto cannot run containers

    multi = _config(recording_aws["home"] / "multi.yaml", {"train": example["train"]}, num_nodes=2, nproc_per_node=4)
    proc = _run_flow(recording_aws, multi, "run")
    assert proc.returncode != 0 and "Step train" in proc.stdout + proc.stderr
    _recording(recording_aws, False)

    definitions = _recorded(recording_aws["endpoint"], "/v1/registerjobdefinition")
    submits = _recorded(recording_aws["endpoint"], "/v1/submitjob")
    (container_def,) = [d for d in definitions if d["type"] == "container"]
    assert container_def["containerProperties"]["image"] == IMAGE
    assert container_def["containerProperties"]["linuxParameters"]["sharedMemorySize"] == 16384
    (prepare_job,) = [s for s in submits if "-prepare-" in s["jobName"]]
    assert _requirements(prepare_job) == {"VCPU": "16", "GPU": "2", "MEMORY": "65536"}
    assert prepare_job["jobQueue"] == "tune-gpu"

    (multinode_def,) = [d for d in definitions if d["type"] == "multinode"]
    nodes = multinode_def["nodeProperties"]
    assert nodes["numNodes"] == 2
    for node_range in nodes["nodeRangeProperties"]:
        container = node_range["container"]
        assert container["image"] == IMAGE
        assert container["linuxParameters"]["sharedMemorySize"] == 65536
        assert container["linuxParameters"]["devices"][0]["hostPath"] == "/dev/infiniband/uverbs0"  # EFA
    (train_job,) = [s for s in submits if "-train-" in s["jobName"]]
    assert train_job["jobQueue"] == "tune-gpu-multinode"
    overrides = train_job["nodeOverrides"]["nodePropertyOverrides"]
    assert [o["targetNodes"] for o in overrides] == ["0:0", "1:1"]
    assert all(_requirements(o) == {"VCPU": "44", "GPU": "4", "MEMORY": "180000"} for o in overrides)


def _manifest(template: dict) -> dict:
    """A JobSet manifest with Argo's {{...}} placeholders kept as strings."""
    text = re.sub(r"\{\{[^}]*\}\}", lambda m: json.dumps(m.group(0)), template["resource"]["manifest"])
    return yaml.safe_load(text)


def test_kubernetes_jobset_for_multi_node_training(recording_aws) -> None:
    example = yaml.safe_load((REPO_ROOT / "configs" / "kubernetes.yaml").read_text())["compute"]
    config = _config(recording_aws["home"] / "k8s.yaml", example, num_nodes=2, nproc_per_node=4)
    proc = _run_flow(recording_aws, config, "argo-workflows", "create", "--only-json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    workflow = json.loads(proc.stdout)
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}

    jobset = _manifest(templates["train"])
    assert jobset["kind"] == "JobSet"
    jobs = {job["name"]: job for job in jobset["spec"]["replicatedJobs"]}
    assert set(jobs) == {"control", "worker"} and jobs["control"]["replicas"] == 1
    # Workers = num_parallel - 1, which the prepare step sets at run time from the config.
    assert "workerCount" in jobs["worker"]["replicas"]
    assert train_tasks(validate_config(yaml.safe_load(config.read_text()))) == 2
    for job in jobs.values():
        pod = job["template"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == IMAGE
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
        assert container["resources"]["requests"]["memory"] == "196608M"
        shm = next(v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory")
        assert shm["emptyDir"]["sizeLimit"] == "65536Mi"
        assert {"mountPath": "/dev/shm", "name": shm["name"]} in container["volumeMounts"]

    evaluate = templates["evaluate"]["container"]
    assert evaluate["image"] == IMAGE and evaluate["resources"]["limits"]["nvidia.com/gpu"] == "2"
