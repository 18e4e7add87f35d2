"""Shared fixtures: the debug config, and a corpus prepared once per session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
# Metaflow needs a user name and refuses "root"; CI has neither USERNAME nor a login.
os.environ.setdefault("USERNAME", "tune-tests")
# moto's request recorder writes `moto_recording` into the working folder (the repository) unless told where.
os.environ.setdefault("MOTO_RECORDER_FILEPATH", os.path.join(tempfile.gettempdir(), f"moto_recording_{os.getpid()}"))

from steps.config import TuneConfig, load_config  # noqa: E402

DEBUG_CONFIG = REPO_ROOT / "configs" / "debug.yaml"


@pytest.fixture(scope="session")
def debug_config() -> TuneConfig:
    return load_config(DEBUG_CONFIG)


@pytest.fixture(scope="session")
def prepared(debug_config: TuneConfig, tmp_path_factory) -> Path:
    """The CWE catalogue prepared with the debug config: <dir>/dataset and <dir>/tokenizer."""
    from steps.prepare import run_prepare

    out = tmp_path_factory.mktemp("prepared")
    run_prepare(debug_config.data, out)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_bucket(tmp_path_factory):
    """A real S3 API (moto_server) on 127.0.0.1 with a bucket `runs`; boto3 and Metaflow point at it."""
    server = shutil.which("moto_server")
    if server is None:
        pytest.fail("moto_server is missing: pip install -r requirements-dev.txt")
    port = _free_port()
    # moto_server writes a `moto_recording` of every request into its working folder: keep it out of the repo.
    proc = subprocess.Popen(
        [server, "-p", str(port)],
        cwd=tmp_path_factory.mktemp("moto"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    patch = pytest.MonkeyPatch()
    for key, value in {
        "METAFLOW_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(key, value)
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint)
        for _ in range(100):
            try:
                client.create_bucket(Bucket="runs")
                break
            except Exception:  # the server is still starting
                time.sleep(0.1)
        yield client
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        patch.undo()


# The in-process moto server and the environment that points AWS clients at it.
from moto_fixtures import aws_env, moto_endpoint  # noqa: E402, F401
