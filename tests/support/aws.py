"""The one fake AWS of the tests: a moto server in this process, on 127.0.0.1, speaking real HTTP.

S3, SageMaker, Batch, EC2, IAM, Secrets Manager and CloudWatch Logs, as botocore
validates them. In-process (moto's ThreadedMotoServer) rather than a subprocess so
that a test can do what AWS does on its side and moto cannot (mark a training job
Failed); subprocesses (Metaflow runs, torchrun, the container entrypoint) reach
it over HTTP through the environment `aws_env` sets. Its request recorder shows
what a flow asked AWS for (`recorded_requests`).
"""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/tune:8848ede928a42e2b"
"""An image URI of the form containers/build_and_push.sh pushes (nothing pulls it here)."""
ROLE = f"arn:aws:iam::{ACCOUNT}:role/tune-sagemaker"


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    install_stop_training_job()
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_environment(endpoint: str) -> dict[str, str]:
    """Environment pointing boto3 and Metaflow's S3 client at the moto server (fake credentials)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "METAFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This test's environment pointed at the moto server; returns the values for subprocesses."""
    env = aws_environment(moto_endpoint)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def sagemaker_training_job(name: str):
    """moto's record of a training job, to set what the real service would (status, failure reason)."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]


def _recorder(endpoint: str, action: str, method: str = "POST") -> bytes:
    request = urllib.request.Request(f"{endpoint}/moto-api/recorder/{action}", method=method)
    with urllib.request.urlopen(request) as response:
        return response.read()


def start_recording(endpoint: str) -> None:
    """Record every request from now on, and nothing from before."""
    _recorder(endpoint, "reset-recording")
    _recorder(endpoint, "start-recording")


def stop_recording(endpoint: str) -> None:
    _recorder(endpoint, "stop-recording")


def recorded_requests(endpoint: str, path: str) -> list[dict]:
    """JSON bodies of the recorded requests to `path` (e.g. /v1/submitjob)."""
    bodies = []
    for line in _recorder(endpoint, "download-recording", method="GET").decode().splitlines():
        entry = json.loads(line)
        if entry["url"].lower().endswith(path):
            body = base64.b64decode(entry["body"]).decode() if entry.get("body_encoded") else entry["body"]
            bodies.append(json.loads(body))
    return bodies


STOP_CALLS: list[str] = []
"""Names of the training jobs StopTrainingJob was called for (moto 5.2.5 does not implement the action)."""


def _stop_training_job(self):
    """What SageMaker does on StopTrainingJob: a running job goes Stopping and then Stopped (at once here)."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ValidationError

    name = self._get_param("TrainingJobName")
    STOP_CALLS.append(name)
    job = self.sagemaker_backend.training_jobs.get(name)
    if job is None:
        raise ValidationError(message=f"Could not find training job '{name}'.")
    if job.training_job_status in ("Completed", "Failed", "Stopped"):
        raise ValidationError(message=f"The job {name} has already {job.training_job_status.lower()}.")
    job.training_job_status = job.secondary_status = "Stopped"
    return ActionResult({})


def install_stop_training_job() -> None:
    """Teach the in-process moto server StopTrainingJob (idempotent)."""
    from moto.sagemaker.responses import SageMakerResponse

    SageMakerResponse.stop_training_job = _stop_training_job
