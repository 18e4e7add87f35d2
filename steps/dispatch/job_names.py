"""Names of a run's SageMaker jobs: unique per run, step and retry, and sharing a prefix per run and step.

The prefix is how a retried step finds its earlier attempt's job (and stops it before
starting its own), so two runs must never share one: SageMaker allows 63 characters,
and a long flow name or run id cut short would make the runs that differ only after
the cut stop each other's jobs. A name that has to be shortened therefore ends in a
hash of the whole flow name and run id.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass

RUN_PART = 34
"""Characters of `<flow>-<run id>` in a name; with `-<step>-a<attempt>-<UTC stamp>` it stays within 63."""
HASH_CHARS = 8


@dataclass(frozen=True)
class JobName:
    """A job's name and the prefix every attempt of its step of its run shares."""

    prefix: str
    name: str

    def __str__(self) -> str:
        return self.name


def _run_part(flow_name: str, run_id: str) -> str:
    whole = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{flow_name}-{run_id}").strip("-")
    if len(whole) <= RUN_PART:
        return whole
    digest = hashlib.sha256(f"{flow_name}\0{run_id}".encode()).hexdigest()[:HASH_CHARS]
    return f"{whole[: RUN_PART - HASH_CHARS - 1].rstrip('-')}-{digest}"


def job_name_prefix(flow_name: str, run_id: str, step: str = "train") -> str:
    """The part of a job's name shared by every attempt of one step of one run (and no other run's)."""
    return f"{_run_part(flow_name, run_id)}-{step[:8]}-a"


def training_job_name(flow_name: str, run_id: str, attempt: int, step: str = "train") -> JobName:
    """A name SageMaker accepts (≤63 chars, [a-zA-Z0-9-]), unique per run, step and retry, with its prefix."""
    prefix = job_name_prefix(flow_name, run_id, step)
    return JobName(prefix, f"{prefix}{attempt}-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}")
