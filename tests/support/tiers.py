"""Marking a test folder's tests with its tier."""

from __future__ import annotations

from pathlib import Path

import pytest


def mark_folder(conftest_file: str, items: list[pytest.Item], *markers: str | pytest.MarkDecorator) -> None:
    """Add `markers` to the collected tests below the folder of `conftest_file`.

    pytest hands every conftest the whole session's items, so each folder picks its own.
    """
    folder = Path(conftest_file).parent
    for item in items:
        if folder in item.path.parents:
            for marker in markers:
                item.add_marker(marker)
