"""What Metaflow sends to AWS Batch and Kubernetes for steps the config dispatches.

Batch: the flow runs against the moto server, whose recorder keeps every request;
the RegisterJobDefinition and SubmitJob bodies Metaflow sent are read back from
it (moto has no Docker here, so the job itself fails, and so does the run; that is
expected). Kubernetes: `argo-workflows create --only-json` prints the workflow
template with the pod and JobSet specs, without a cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steps.config import validate_config
from steps.dispatch.decorators import train_tasks
from steps.project_files import CONFIGS, DEBUG_CONFIG, FLOW_FILE
from tests.support.aws import IMAGE, aws_environment, recorded_requests, start_recording, stop_recording

DEBUG = yaml.safe_load(DEBUG_CONFIG.read_text())


def _config(path: Path, compute: dict, **train) -> Path:
    """The debug pipeline (fast prepare) with the compute section of an example config."""
    raw = {key: dict(value) for key, value in DEBUG.items()}
    raw["train"].update(train)
    raw["compute"] = compute
    validate_config(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def recording_aws(moto_endpoint: str, tmp_path_factory):
    """The moto server with a Batch queue and an S3 datastore, and the environment of a flow that uses them."""
    import boto3

    home = tmp_path_factory.mktemp("dispatch")
    aws = aws_environment(moto_endpoint)
    clients = {
        name: boto3.client(
            name,
            endpoint_url=moto_endpoint,
            region_name=aws["AWS_DEFAULT_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name in ("s3", "ec2", "iam", "batch")
    }
    clients["s3"].create_bucket(Bucket="tune-metaflow")
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
    return {"home": home, "endpoint": moto_endpoint, "env": flow_env}


def _run_flow(aws: dict, config: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(FLOW_FILE), "--config", "config", str(config), *command],
        cwd=aws["home"],
        env=aws["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _requirements(node: dict) -> dict[str, str]:
    return {r["type"]: r["value"] for r in node["containerOverrides"]["resourceRequirements"]}


def test_batch_single_and_multi_node_requests(recording_aws) -> None:
    example = yaml.safe_load((CONFIGS / "batch.yaml").read_text())["compute"]
    start_recording(recording_aws["endpoint"])
    single = _config(recording_aws["home"] / "single.yaml", {"prepare": {**example["evaluate"], "queue": "tune-gpu"}})
    proc = _run_flow(recording_aws, single, "run")
    assert proc.returncode != 0 and "Step prepare" in proc.stdout + proc.stderr  # moto cannot run containers

    multi = _config(recording_aws["home"] / "multi.yaml", {"train": example["train"]}, num_nodes=2, nproc_per_node=4)
    proc = _run_flow(recording_aws, multi, "run")
    assert proc.returncode != 0 and "Step train" in proc.stdout + proc.stderr
    stop_recording(recording_aws["endpoint"])

    definitions = recorded_requests(recording_aws["endpoint"], "/v1/registerjobdefinition")
    submits = recorded_requests(recording_aws["endpoint"], "/v1/submitjob")
    (container_def,) = [d for d in definitions if d["type"] == "container"]
    assert container_def["containerProperties"]["image"] == IMAGE
    assert container_def["containerProperties"]["linuxParameters"]["sharedMemorySize"] == 16384
    (prepare_job,) = [s for s in submits if "prepare" in s["jobName"]]  # prepare_read, its first foreach task
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
    example = yaml.safe_load((CONFIGS / "kubernetes.yaml").read_text())["compute"]
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
