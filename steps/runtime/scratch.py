"""Temporary folders that belong to one stage: made under one folder and removed when the stage ends.

A stage's controller fetches its inputs (dataset, train folder, base model), writes its
config and lets its child write the outputs here; once the outputs are published the
folder goes, on success and on failure alike, so raw corpora, base-model copies and
fetched checkpoints do not pile up in /tmp run after run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def stage_scratch(stage: str) -> Iterator[Path]:
    """A new temporary folder for `stage`, removed with everything in it when the block ends."""
    folder = Path(tempfile.mkdtemp(prefix=f"tune-{stage}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
