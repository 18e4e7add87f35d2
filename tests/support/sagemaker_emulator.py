"""SageMaker's data plane, emulated without Docker: what the service does around our container.

moto accepts and stores a CreateTrainingJob request but runs nothing. This does
the rest for N hosts on 127.0.0.1: downloads each input channel into the host's
/opt/ml/input/data/<channel>, writes resourceconfig.json, starts
`containers/entrypoint.sh train` per host with the SM_* environment, ships the
output to CloudWatch Logs, then uploads every host's /opt/ml/checkpoints to the
checkpoint URI and the first host's /opt/ml/model, uncompressed, to
<S3OutputPath>/<job>/output/model/. A failed host fails the job with its
/opt/ml/output/failure as the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

from steps.dispatch.sagemaker_job import LOG_GROUP
from steps.project_files import CONTAINERS
from steps.runtime.launch import free_port
from steps.runtime.storage import open_storage
from tests.support.aws import sagemaker_training_job

ENTRYPOINT = CONTAINERS / "entrypoint.sh"


def host_environment(base: Path, hosts: list[str], host: str, port: int, job_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PYTHONPATH"))}
    env.update(job_env)  # the request's Environment, as SageMaker sets it
    env.update(
        {
            "SAGEMAKER_BASE_DIR": str(base),
            "SM_HOSTS": json.dumps(hosts),
            "SM_CURRENT_HOST": host,
            "SM_NUM_GPUS": "0",
            "MASTER_PORT": str(port),
            "PYTHON": sys.executable,
        }
    )
    return env


def _upload_tree(folder: Path, uri: str) -> None:
    storage = open_storage(uri)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        storage.put_file(path, path.relative_to(folder).as_posix())


def _ship_logs(logs, job: str, host_index: int, text: str) -> None:
    stream = f"{job}/algo-{host_index + 1}-{int(time.time())}"
    try:
        logs.create_log_group(logGroupName=LOG_GROUP)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)
    events = [{"timestamp": now, "message": line} for line in text.splitlines() if line.strip()]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[-5000:])


def run_job(request: dict[str, Any], root: Path, hosts: list[str]) -> list[subprocess.CompletedProcess]:
    """Run the job's hosts to completion; returns each host's finished process (output in stdout)."""
    logs = boto3.client("logs")
    job = request["TrainingJobName"]
    port = free_port()
    processes = []
    for index, host in enumerate(hosts):
        base = root / f"host-{index}" / "opt" / "ml"
        for channel in request["InputDataConfig"]:
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            open_storage(uri).materialize(base / "input" / "data" / channel["ChannelName"])
        (base / "input" / "config").mkdir(parents=True, exist_ok=True)
        (base / "input" / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": hosts})
        )
        env = host_environment(base, hosts, host, port, request.get("Environment", {}))
        processes.append(
            subprocess.Popen(
                ["bash", str(ENTRYPOINT), "train"],
                env=env,
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    finished = []
    for index, process in enumerate(processes):
        out, _ = process.communicate(timeout=900)
        finished.append(subprocess.CompletedProcess(process.args, process.returncode, out))
        _ship_logs(logs, job, index, out)
    if all(p.returncode == 0 for p in finished):
        for index in range(len(hosts)):
            base = root / f"host-{index}" / "opt" / "ml"
            _upload_tree(base / "checkpoints", request["CheckpointConfig"]["S3Uri"])
        output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        _upload_tree(root / "host-0" / "opt" / "ml" / "model", f"{output}/{job}/output/model")
    else:  # as SageMaker does: the job fails with the first failure file as its reason
        reasons = [root / f"host-{i}" / "opt" / "ml" / "output" / "failure" for i in range(len(hosts))]
        record = sagemaker_training_job(job)
        record.training_job_status = record.secondary_status = "Failed"
        record.failure_reason = next((r.read_text() for r in reasons if r.is_file()), "AlgorithmError")
    return finished


class EmulatedSageMaker:
    """A boto3 session against moto whose SageMaker jobs run on emulated hosts as they are created.

    The SDK (sagemaker-core) makes its own clients from the session it is given; the
    session's event hooks see the CreateTrainingJob parameters as botocore sends them
    (after botocore validated them against the service model) and run the job's hosts.
    """

    def __init__(self, root: Path, hosts: list[str]) -> None:
        self.root, self.hosts = root, hosts
        self.requests: list[dict[str, Any]] = []
        self.hosts_finished: list[subprocess.CompletedProcess] = []
        self.session = boto3.Session()
        self.session.events.register("provide-client-params.sagemaker.CreateTrainingJob", self._remember)
        self.session.events.register("after-call.sagemaker.CreateTrainingJob", self._run)

    def _remember(self, params: dict[str, Any], **_: Any) -> None:
        self.requests.append(json.loads(json.dumps(params, default=str)))

    def _run(self, http_response, parsed: dict[str, Any], **_: Any) -> None:
        if http_response.status_code == 200:
            request = self.requests[-1]
            self.hosts_finished = run_job(request, self.root / request["TrainingJobName"], self.hosts)
