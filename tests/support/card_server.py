"""Metaflow's own card viewer (`python flows/tune_flow.py card server`) in a subprocess, read over HTTP."""

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
from pathlib import Path

from steps.project_files import FLOW_FILE
from steps.runtime.launch import free_port

START_TIMEOUT_S = 120.0
"""It imports the flow file (Metaflow, pydantic, our config) before it listens: seconds, more on 2 busy cores."""


class CardServer:
    def __init__(self, url: str) -> None:
        self.url = url

    def cards(self) -> list[dict]:
        """The server's list of the run's cards (its `/runinfo`): task pathspec, card path, type, ..."""
        return json.loads(self.get("runinfo"))["cards"]

    def get(self, route: str) -> str:
        with urllib.request.urlopen(f"{self.url}/{route}", timeout=120) as response:
            return response.read().decode()


@contextmanager
def card_server(home: Path, run_id: str, env: dict[str, str]) -> Iterator[CardServer]:
    """Serve the cards of run `run_id` from the datastore under `home`; stopped, and its port closed, on leaving."""
    port = free_port()
    command = [sys.executable, str(FLOW_FILE), "card", "server", "--run-id", run_id, "--port", str(port)]
    environment = {**os.environ, **env, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(home)}
    log = home / f"card-server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=home, env=environment, stdout=out, stderr=subprocess.STDOUT)
    server = CardServer(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the card server exited with code {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                server.cards()
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    message = f"no card server on port {port} in {START_TIMEOUT_S} s: {log.read_text()}"
                    raise TimeoutError(message) from None
                time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"the card server's port {port} is still open"
