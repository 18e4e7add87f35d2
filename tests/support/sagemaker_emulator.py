"""SageMaker's data plane, emulated without Docker: what the service does around our container.

moto accepts and stores a CreateTrainingJob request but runs nothing. This does
the rest for N hosts on 127.0.0.1: downloads each input channel into the host's
/opt/ml/input/data/<channel>, writes resourceconfig.json, starts
`containers/entrypoint.sh train` per host with the SM_* environment, ships the
output to CloudWatch Logs, then uploads every host's /opt/ml/checkpoints to the
checkpoint URI and every host's /opt/ml/model, uncompressed, to
<S3OutputPath>/<job>/output/model/ (one prefix for all hosts: files of the same
name overwrite each other, so our container writes it on the first host only). A failed host fails the job with its
/opt/ml/output/failure as the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from steps.dispatch.job_guard import LOG_GROUP
from steps.project_files import CONTAINERS
from steps.runtime.launch import free_port
from steps.runtime.storage import open_storage
from tests.support.aws import sagemaker_training_job

ENTRYPOINT = CONTAINERS / "entrypoint.sh"


def host_environment(base: Path, hosts: list[str], host: str, port: int, job_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PYTHONPATH"))}
    env.update(job_env)  # the request's Environment, as SageMaker sets it
    temp = base.parents[1] / "tmp"  # each container has a /tmp of its own, gone with it
    temp.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "TMPDIR": str(temp),
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
        for index in range(len(hosts)):  # only a training job syncs /opt/ml/checkpoints (convert/evaluate have none)
            if "CheckpointConfig" in request:
                _upload_tree(
                    root / f"host-{index}" / "opt" / "ml" / "checkpoints", request["CheckpointConfig"]["S3Uri"]
                )
        output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        for index in range(len(hosts)):  # as SageMaker does: every host's /opt/ml/model into the one prefix
            model = root / f"host-{index}" / "opt" / "ml" / "model"
            if model.is_dir():
                _upload_tree(model, f"{output}/{job}/output/model")
    else:  # as SageMaker does: the job fails with the first failure file as its reason
        reasons = [root / f"host-{i}" / "opt" / "ml" / "output" / "failure" for i in range(len(hosts))]
        record = sagemaker_training_job(job)
        # The reason first: a step polling from another thread may see the status the moment it changes.
        record.failure_reason = next((r.read_text() for r in reasons if r.is_file()), "AlgorithmError")
        record.training_job_status = record.secondary_status = "Failed"
    return finished


HOSTS = ["127.0.0.1", "localhost"]
"""Names the emulated hosts go by (two names of this machine; a job asks for at most two here)."""


class EmulatedSageMaker:
    """SageMaker's side of CreateTrainingJob, in the in-process moto server: a created job goes InProgress
    and its hosts run in a thread of the test process, then it ends Completed or Failed.

    Server-side, so it runs the jobs of any client: this test's SDK calls and those of a Metaflow
    flow in a subprocess alike. `requests` holds each CreateTrainingJob body as it came over the
    wire (after botocore validated it against the service model).
    """

    def __init__(self, root: Path, hosts: list[str] | None = None) -> None:
        self.root, self.hosts = root, hosts
        self.requests: list[dict[str, Any]] = []
        self.hosts_finished: list[subprocess.CompletedProcess] = []
        self.session = boto3.Session()
        self.threads: list[threading.Thread] = []

    def install(self, monkeypatch) -> EmulatedSageMaker:
        from moto.sagemaker.responses import SageMakerResponse

        original = SageMakerResponse.create_training_job
        emulator = self

        def create_training_job(response):
            result = original(response)
            request = json.loads(response.body)
            emulator.requests.append(request)
            record = sagemaker_training_job(request["TrainingJobName"])
            record.training_job_status, record.secondary_status = "InProgress", "Starting"
            thread = threading.Thread(target=emulator._run, args=(request,), daemon=True)
            emulator.threads.append(thread)
            thread.start()
            return result

        monkeypatch.setattr(SageMakerResponse, "create_training_job", create_training_job)
        return self

    def _run(self, request: dict[str, Any]) -> None:
        hosts = (self.hosts or HOSTS)[: request["ResourceConfig"]["InstanceCount"]]
        record = sagemaker_training_job(request["TrainingJobName"])
        record.secondary_status = "Training"
        try:
            self.hosts_finished = run_job(request, self.root / request["TrainingJobName"], hosts)
        except Exception as exc:  # noqa: BLE001 - the job fails, as SageMaker's would
            record.training_job_status, record.failure_reason = "Failed", f"emulator: {exc!r}"
            return
        if record.training_job_status == "InProgress":
            record.training_job_status = record.secondary_status = "Completed"
