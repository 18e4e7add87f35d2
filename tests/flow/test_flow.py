"""The flow's command line refuses a bad config before any step runs.

The debug pipeline end to end, and a run on two nodes and three prepare workers killed and resumed, run under a
metadata service with what the Metaflow UI shows of them: tests/flow/test_ui_service.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from steps.project_files import FLOW_FILE
from tests.support.flow_runs import config_file
from tests.support.flow_runs import flow_home as make_home


@pytest.fixture(scope="module")
def flow_home(tmp_path_factory) -> Path:
    return make_home(tmp_path_factory.mktemp("flow"))


def test_invalid_config_fails_before_any_step(flow_home: Path) -> None:
    bad = config_file(flow_home, "bad", deepspeed={"zero_stage": 5})
    env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(flow_home)}
    proc = subprocess.run(
        [sys.executable, str(FLOW_FILE), "--config", "config", str(bad), "run"],
        cwd=flow_home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "deepspeed.zero_stage" in proc.stdout + proc.stderr
    assert "Task is starting" not in proc.stdout + proc.stderr
    assert not list((flow_home / ".metaflow").glob("TuneFlow/*/start"))
