"""A real Metaflow metadata service for tests: `metaflow-local-service` on 127.0.0.1, spoken to over HTTP.

It records runs in the `.metaflow` folder under `root` (the same layout as local metadata) and serves two APIs:
the metadata API that Metaflow's runtime and client use (`/flows/...`), and a subset of the Metaflow UI backend's
(`/api/flows/...`), the routes the UI itself calls. docs/ui.md lists which of those are stubs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from steps.runtime.launch import free_port

START_TIMEOUT_S = 60.0
"""Python, FastAPI and Metaflow import in a few seconds; on 2 busy cores, more."""


@dataclass(frozen=True)
class MetadataService:
    url: str
    """http://127.0.0.1:<port>: what METAFLOW_SERVICE_URL names."""
    pid: int

    @property
    def env(self) -> dict[str, str]:
        """What a flow's processes need to record to this service instead of local metadata."""
        return {"METAFLOW_DEFAULT_METADATA": "service", "METAFLOW_SERVICE_URL": self.url}

    def api(self, route: str) -> Any:
        """GET one of the UI backend's routes (`flows/TuneFlow/runs`, ...): the `data` of its JSON envelope."""
        with urllib.request.urlopen(f"{self.url}/api/{route}", timeout=60) as response:
            return json.loads(response.read())["data"]

    @contextmanager
    def client(self) -> Iterator[None]:
        """The Metaflow client in this process reads this service; the provider it had is restored after.

        Restored as the object it was, not through `metadata(...)`: that would point the local provider at
        whichever .metaflow folder its description named, under the other flow tests' feet.
        """
        import metaflow.client.core as client
        from metaflow import metadata

        before = client.current_metadata
        metadata(f"service@{self.url}")
        try:
            yield
        finally:
            client.current_metadata = before


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"metaflow-local-service exited with code {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.headers.get("METADATA_SERVICE_VERSION"):
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"metaflow-local-service did not answer {url}/ping in {START_TIMEOUT_S} s: {log.read_text()}")


@contextmanager
def metadata_service(root: Path) -> Iterator[MetadataService]:
    """Start the service for the `.metaflow` folder under `root`; on leaving, stop it and check that nothing is
    left running or listening.

    The daemon module is started directly, as this process's child, rather than through `metaflow-local-service
    start`: that command reuses any daemon already running for the user (its state file is in ~), detaches it and
    drops its output. HOME is a folder of the test's own, so the daemon's state file never touches the user's.
    """
    port = free_port()
    home = root / "service-home"
    home.mkdir(parents=True, exist_ok=True)
    log = root / "metadata-service.log"
    env = {**os.environ, "HOME": str(home), "METAFLOW_LOCAL_SERVICE_DEBUG": "1"}
    command = [sys.executable, "-m", "metaflow_local_service.daemon", "--port", str(port)]
    # The idle timeout shuts the daemon down after so long without heartbeats; the test stops it instead.
    command += ["--metaflow-root", str(root), "--idle-timeout", str(24 * 3600)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    service = MetadataService(url=f"http://127.0.0.1:{port}", pid=proc.pid)
    try:
        _wait_until_up(proc, service.url, log)
        yield service
    finally:
        proc.terminate()  # uvicorn shuts down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            message = f"metaflow-local-service ignored SIGTERM for 30 s: {log.read_text()[-3000:]}"
            raise AssertionError(message) from None
    assert not psutil.pid_exists(proc.pid), f"metaflow-local-service (pid {proc.pid}) is still running"
    assert not _listening(port), f"something still listens on 127.0.0.1:{port} after the service stopped"
