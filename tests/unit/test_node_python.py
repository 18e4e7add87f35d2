"""Local @parallel nodes run in the flow's own interpreter, however the flow was started (flows/node_python.py)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from flows.node_python import run_nodes_with_this_python

HERE = Path(os.path.abspath(sys.executable)).parent


def test_a_path_whose_python_is_the_same_interpreter_outside_this_environment_gets_this_folder_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As with the virtual environment not activated: PATH's `python` is the system's, the very interpreter binary
    # the environment's `python` links to, without the environment's packages.
    system = tmp_path / "usr-bin"
    system.mkdir()
    (system / "python").symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setenv("PATH", str(system))
    run_nodes_with_this_python()
    assert Path(shutil.which("python")).parent == HERE


def test_a_path_whose_python_is_this_ones_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.pathsep.join([str(HERE), "/usr/bin"]))
    run_nodes_with_this_python()
    assert os.environ["PATH"] == os.pathsep.join([str(HERE), "/usr/bin"])
