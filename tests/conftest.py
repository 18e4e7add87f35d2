"""Shared fixtures: the debug config, and a corpus prepared once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
# Metaflow needs a user name and refuses "root"; CI has neither USERNAME nor a login.
os.environ.setdefault("USERNAME", "tune-tests")

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


# The in-process moto server and the environment that points AWS clients at it.
from moto_fixtures import aws_env, moto_endpoint  # noqa: E402, F401
