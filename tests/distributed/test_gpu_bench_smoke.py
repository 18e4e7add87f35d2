"""bench/gpu/run.sh's training and inference parts at a tiny size on CPU: the scripts the GPU machine runs still run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steps.project_files import REPO_ROOT

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_run_sh_smoke_writes_each_part_and_the_table(tmp_path: Path) -> None:
    env = {**os.environ, "SMOKE": "1", "PARTS": "2,3", "WHEELS": str(tmp_path / "none"), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "gpu" / "run.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    assert train["tokens_per_s"] > 0 and train["steps"] == 30 and len(train["loss_first_last"]) == 2
    inference = json.loads((tmp_path / "out" / "inference.json").read_text())
    assert {name: data["ran"] for name, data in inference["engines"].items()} == {
        "hf": "hf",
        "deepspeed": "autotp",  # no kernels to inject on CPU, and the JSON says so
        "zero": "zero",
    }
    assert all(run["tokens_per_s"] > 0 for data in inference["engines"].values() for run in data["runs"])
    assert "| 2 training throughput |" in done.stdout and "| 3 inference engines |" in done.stdout
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 2
