"""A stage as a spec: its entry module, how it launches, its named inputs, its output and the summary it writes.

The specs themselves are in `steps/stages.py`, one place for all; `steps.dispatch.runner`
runs any of them here, in a Batch or Kubernetes container, or as a SageMaker job, and
the SageMaker container (`steps.dispatch.container`) runs them on each host. Every entry
point has the same command line: `--config FILE`, one `--<input> DIR` per named input
(several folders for a list), `--out DIR`, and the stage's own values (`--shard 3`);
a stage that checkpoints also takes `--checkpoint-uri`, `--checkpoint-staging` and
`--resume-from`. It writes its outputs and its summary under `--out`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from steps.config import TuneConfig

Launch = Literal["process", "torchrun"]
InputPath = Path | Sequence[Path] | None


@dataclass(frozen=True)
class Output:
    """A folder a stage writes: the result's field of that name, and the input name later stages take it by."""

    name: str
    folder: str = "."
    """Where under `--out` the entrypoint writes it, and under the stage's folder in the run's storage."""
    optional: bool = False
    """Written only for some configs (prepare's base model): absent, the result's field is None."""


@dataclass(frozen=True)
class Live:
    """A file under `--out` the ranks rewrite while the stage runs (train's metrics, evaluate's progress)."""

    file: str
    read: Callable[[Path], Any]
    """Parses the file as it stands; may raise OSError, ValueError or KeyError while it is not whole yet."""
    publish: bool = False
    """Copied to the run's storage as it grows, where the stage's own folder is not (train's metrics)."""


def _one(config: TuneConfig) -> int:
    return 1


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str
    """The entry point, run as `python -m <module>` (or under torchrun)."""
    launch: Launch
    compute: str
    """The `compute.<section>` that says where it runs."""
    folder: str
    """Its folder in the run's storage; `{shard}` and other values of `params` are filled in."""
    result: type[BaseModel]
    outputs: tuple[Output, ...] = (Output("output"),)
    inputs: tuple[str, ...] = ()
    summary: tuple[str, str] | None = None
    """(the result's field, the file under `--out`) of the summary the entrypoint writes."""
    passes: tuple[str, ...] = ()
    """Inputs handed on in the result as they came (prepare's last join hands on the tokenizer)."""
    read_more: Callable[[Path], dict[str, Any]] | None = None
    """More fields of the result, read from the written folder (train's metrics, evaluate's tables)."""
    args: tuple[str, ...] = ()
    """Fixed arguments of the entry point (prepare's `--phase`)."""
    processes: Callable[[TuneConfig], int] = _one
    """Ranks per machine under torchrun."""
    hosts: Callable[[TuneConfig], int] = _one
    """Machines: train's @parallel nodes and its SageMaker job's hosts, an evaluate job's hosts."""
    hosts_field: str = "a single host"
    """Where `hosts` comes from, for messages (`train.num_nodes`)."""
    failure_timeout_s: Callable[[TuneConfig], int | None] = lambda config: None
    """How long a rank waits for a dead peer, and nodes for each other, before the launch fails."""
    checkpoints: bool = False
    """Writes checkpoints (under `<folder>/checkpoints`) that a retried or resumed run continues from."""
    live: Live | None = None
    trusted_inputs: tuple[str, ...] = ()
    """Inputs fetched without re-hashing every file, which the entry point checks as it reads them (a train
    folder holds every kept checkpoint; convert reads and verifies one)."""
    explain_failure: Callable[[Path, Mapping[str, Any]], str] | None = None
    """A headline for a failed launch from what the entry point left under `--out` (prepare names a shard's files)."""
    on_sagemaker: bool = False
    """Can run as a SageMaker job (`compute.<section>.target: sagemaker`)."""

    def stored_as(self, params: Mapping[str, Any]) -> str:
        return self.folder.format(**params)

    @property
    def job_field(self) -> str:
        """The result's field for the SageMaker job that ran the stage."""
        return f"{self.name}_job"


@dataclass(frozen=True)
class CheckpointArgs:
    """Where a checkpointing stage keeps its checkpoints, stages copies, and which earlier roots it resumes from."""

    uri: str
    staging: Path | None = None
    resume_from: tuple[str, ...] = ()


def entry_args(
    spec: StageSpec,
    config_file: Path,
    inputs: Mapping[str, InputPath],
    out: Path,
    params: Mapping[str, Any] | None = None,
    checkpoints: CheckpointArgs | None = None,
) -> list[str]:
    """The entry point's command line: the same wherever it runs."""
    args = ["--config", str(config_file), *spec.args]
    for name in spec.inputs:
        value = inputs.get(name)
        if value is None:
            continue
        values = [value] if isinstance(value, Path | str) else list(value)
        args += [f"--{name.replace('_', '-')}", *map(str, values)]
    args += ["--out", str(out)]
    for name, value in (params or {}).items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    if checkpoints is not None:
        args += ["--checkpoint-uri", checkpoints.uri]
        if checkpoints.staging is not None:
            args += ["--checkpoint-staging", str(checkpoints.staging)]
        for root in checkpoints.resume_from:
            args += ["--resume-from", root]
    return args
