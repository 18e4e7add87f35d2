"""Shared fixtures: the debug config, a corpus prepared once per session, the fake AWS (tests/support/aws.py)
and SmolLM2 dequantized once per session (tests/support/smollm2.py).

Tests live in tiers, one folder each, and each folder's conftest marks its tests:
`unit` (seconds, no torchrun), `distributed` (2 CPU ranks under torchrun, gloo),
`flow` (whole runs through metaflow.Runner) and `gpu` (skipped without CUDA).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Metaflow needs a user name and refuses "root"; CI has neither USERNAME nor a login.
os.environ.setdefault("USERNAME", "tune-tests")
# moto's request recorder writes `moto_recording` into the working folder (the repository) unless told where.
os.environ.setdefault("MOTO_RECORDER_FILEPATH", os.path.join(tempfile.gettempdir(), f"moto_recording_{os.getpid()}"))

from steps.config import TuneConfig, load_config  # noqa: E402
from steps.project_files import DEBUG_CONFIG  # noqa: E402

pytest_plugins = ["tests.support.aws", "tests.support.smollm2"]


@pytest.fixture(scope="session")
def debug_config() -> TuneConfig:
    return load_config(DEBUG_CONFIG)


@pytest.fixture(scope="session")
def prepared(debug_config: TuneConfig, tmp_path_factory) -> Path:
    """The CWE catalogue prepared with the debug config: <dir>/dataset and <dir>/tokenizer."""
    from steps.prepare.pipeline import run_prepare

    out = tmp_path_factory.mktemp("prepared")
    run_prepare(debug_config.data, out)
    return out
