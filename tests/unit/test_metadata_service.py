"""The UI tier's metadata service fixture: it starts, answers the UI backend's routes, and leaves nothing behind."""

from __future__ import annotations

import socket
from pathlib import Path

import psutil
import pytest

from tests.support import metadata_service as service_module
from tests.support.metadata_service import metadata_service


def test_the_service_answers_and_is_gone_after(tmp_path: Path) -> None:
    with metadata_service(tmp_path) as service:
        assert service.api("flows") == [] and service.env["METAFLOW_SERVICE_URL"] == service.url
        port = int(service.url.rsplit(":", 1)[1])
    assert not psutil.pid_exists(service.pid)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_a_port_taken_fails_the_start_with_the_services_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(service_module, "free_port", lambda: taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="exited with code 3: .*address already in use"):
            with metadata_service(tmp_path):
                pass
