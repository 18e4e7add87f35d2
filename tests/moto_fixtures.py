"""A moto server in this process, on 127.0.0.1: real HTTP S3, SageMaker, Batch, Secrets Manager, Logs.

In-process (moto's ThreadedMotoServer) rather than a subprocess so that a test can
do what AWS does on its side and moto cannot: mark a training job Failed.
Subprocesses (Metaflow runs, torchrun, the container entrypoint) reach it over HTTP.
"""

from __future__ import annotations

import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request drowns test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing boto3 and Metaflow's S3 client at the moto server (fake credentials)."""
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "METAFLOW_S3_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def sagemaker_training_job(name: str):
    """moto's record of a training job, to set what the real service would (status, failure reason)."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].training_jobs[name]
