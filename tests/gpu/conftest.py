"""The gpu tier: marked `gpu`, skipped where there is no CUDA device (bench/gpu/run.sh runs it on the GPU machine)."""

import os
import socket

import pytest
import torch

from tests.support.tiers import mark_folder


def pytest_collection_modifyitems(items) -> None:
    mark_folder(__file__, items, "gpu")
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        mark_folder(__file__, items, skip)


@pytest.fixture
def single_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """What torchrun sets for one rank, so that engines can be built in the test process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", os.environ.get("MASTER_PORT", str(port)))
