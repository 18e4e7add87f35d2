"""The one runner: any stage spec (`steps/stages.py`), here or as a SageMaker job, to its typed result.

    result = run_stage(TRAIN, config, place, {"dataset": ..., "tokenizer": ..., "base_model": ...})

Here means the step's own process, on this machine or in the Batch or Kubernetes
container Metaflow's decorators put it in (`compute.<section>.target`: local, batch,
kubernetes). The runner makes the stage's scratch folder, fetches each named input
with every file checked against its reference's hash, writes the config, launches the
entry point (one process, or this node's ranks under torchrun), follows its live file
for the card, then publishes the outputs under the stage's folder in the run's storage
and reads the summary the entry point wrote. A `sagemaker` target submits a job that
runs the same entry point in our container (`steps.dispatch.sagemaker_job`), and its
output is published the same way, so no later step can tell where a stage ran.

Multi-node stages (train under `@parallel`) run one `run_stage` per node: the nodes agree
on a rendezvous port and collect every node's log through the run's storage
(`steps.runtime.node_logs`); node 0 publishes the result and the others return None.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from steps.config import TuneConfig, write_config
from steps.dispatch.job_names import JobName
from steps.formats.train_folder import CHECKPOINTS, checkpoint_entries
from steps.runtime.file_watcher import FileWatcher
from steps.runtime.launch import LaunchError, Rendezvous, free_port, run_module, run_torchrun
from steps.runtime.node_logs import agreed_port, collect_node_logs, mark_node_running, publish_node_log
from steps.runtime.scratch import stage_scratch
from steps.runtime.stage_spec import CheckpointArgs, InputPath, StageSpec, entry_args
from steps.runtime.storage import Storage, StoredDir, fetch

Reference = StoredDir | dict[str, Any]
"""A stored folder's reference: typed, or as an artifact holds it (`StoredDir.to_dict()`)."""
Inputs = Mapping[str, Reference | Sequence[Reference] | None]
LIVE_INTERVAL_S = 5.0


class StageError(RuntimeError):
    """A stage that ended without what its spec promises (an output folder, a valid summary)."""


@dataclass(frozen=True)
class _Node:
    rdzv: Rendezvous
    log_file: Path | None


@dataclass(frozen=True)
class Place:
    """Where a step runs its stage, and what it knows of its run."""

    storage: Storage
    """The run's files (`<datastore root>/<flow>/<run id>/files`)."""
    job_name: JobName | None = None
    """The SageMaker job's name, for a `sagemaker` target."""
    node: Rendezvous = Rendezvous(main_port=0)
    """This node of a multi-node stage; port 0: agreed between the nodes through the run's storage."""
    attempt: int = 0
    """The step's retry number: nodes of one attempt meet, never those of another."""
    resumes: Storage | None = None
    """The files of the run this one resumes (`resume`): a checkpointing stage continues from its checkpoints."""


def run_stage(
    spec: StageSpec,
    config: TuneConfig,
    place: Place,
    inputs: Inputs | None = None,
    params: Mapping[str, Any] | None = None,
    on_progress: Callable[[Any], None] | None = None,
) -> BaseModel | None:
    """Run `spec` where `compute.<spec.compute>` says; its result (`spec.result`), or None on nodes other than 0.

    `inputs`: the stored folders by the names the spec takes (None for an absent optional one).
    `params`: the stage's own values (`shard`). `on_progress`: called with the parsed live file
    (train's metrics so far, evaluate's progress line) whenever it changes, while the stage runs here.
    """
    inputs, params = _references(inputs or {}), dict(params or {})
    if getattr(config.compute, spec.compute).target == "sagemaker":
        # Imported only by a step that submits a job: the SageMaker SDK takes about a second to import, and
        # every Metaflow step and card-refresh process imports the flow file, and so this module.
        from steps.dispatch.sagemaker_job import run_as_job  # noqa: PLC0415

        return run_as_job(spec, config, place, inputs, params)
    storage, folder = place.storage, spec.stored_as(params)
    with stage_scratch(spec.name) as scratch:  # fetched inputs, staging, copies: gone when the stage ends
        out = storage.workdir(folder, under=scratch)  # the stored folder itself where this machine holds it
        args = _command_line(spec, config, place, folder, out, scratch, inputs, params)
        (scratch / "tmp").mkdir()
        # Every temporary file of the entry point (a downloaded corpus among them) stays in the stage's scratch.
        env = {"TMPDIR": str(scratch / "tmp")}
        # Node 0 follows the live file: only its ranks write one.
        following = contextlib.nullcontext()
        if place.node.node_rank == 0:
            following = _following(spec, storage, folder, out, on_progress)
        with _explained(spec, out, params), _nodes(spec, config, place, folder, out) as node, following:
            if spec.launch == "torchrun":
                timeout = spec.failure_timeout_s(config)
                nproc = spec.processes(config)
                run_torchrun(spec.module, args, nproc, node.rdzv, timeout_s=timeout, log_file=node.log_file, env=env)
            else:
                run_module(spec.module, args, env=env)
        if place.node.node_rank != 0:
            return None
        return publish_result(spec, storage, folder, out, inputs)


def _references(inputs: Inputs) -> dict[str, StoredDir | list[StoredDir] | None]:
    def typed(ref: Reference) -> StoredDir:
        return ref if isinstance(ref, StoredDir) else StoredDir.from_dict(ref)

    return {
        name: None if ref is None else typed(ref) if isinstance(ref, StoredDir | dict) else [typed(r) for r in ref]
        for name, ref in inputs.items()
    }


def _fetch_inputs(spec: StageSpec, inputs: Inputs, folder: Path) -> dict[str, InputPath]:
    """Local folders of the spec's inputs, each checked against its reference (a list: one folder each)."""
    paths: dict[str, InputPath] = {}
    for name in spec.inputs:
        ref = inputs.get(name)
        verify = name not in spec.trusted_inputs
        if ref is None:
            paths[name] = None
        elif isinstance(ref, StoredDir):
            paths[name] = fetch(ref, folder / name, verify=verify)
        else:
            paths[name] = [fetch(r, folder / name / str(k), verify=verify) for k, r in enumerate(ref)]
    return paths


def _clear_outputs(spec: StageSpec, out: Path) -> None:
    """What an earlier attempt left where this one writes in place (a stage that does not checkpoint restarts)."""
    for output in spec.outputs:
        target = out / output.folder
        if output.folder == ".":
            for child in list(out.iterdir()):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        elif target.exists():
            shutil.rmtree(target)


def _command_line(
    spec: StageSpec, config: TuneConfig, place: Place, folder: str, out: Path, scratch: Path, inputs: Inputs, params
) -> list[str]:
    """The entry point's arguments: its inputs fetched (every file checked), its config, where it writes."""
    if not spec.checkpoints and place.storage.local_path is not None:
        _clear_outputs(spec, out)
    checkpoints = None
    if spec.checkpoints:
        resumed = (place.resumes.uri(f"{folder}/{CHECKPOINTS}"),) if place.resumes is not None else ()
        staging = scratch / "checkpoint-staging"  # one per machine, shared by its ranks
        checkpoints = CheckpointArgs(place.storage.uri(f"{folder}/{CHECKPOINTS}"), staging, resumed)
    paths = _fetch_inputs(spec, inputs, scratch / "inputs")
    return entry_args(spec, write_config(config, scratch / "config.json"), paths, out, params, checkpoints)


@contextlib.contextmanager
def _explained(spec: StageSpec, out: Path, params: Mapping[str, Any]) -> Iterator[None]:
    """A failed launch headed by what the entry point was working on (prepare: a shard's files), where it says."""
    try:
        yield
    except LaunchError as exc:
        if spec.explain_failure is None:
            raise
        # Whatever killed the child (an error it names, or the OOM killer), say what it was working on.
        headline = spec.explain_failure(out, params)
        raise LaunchError(f"{headline}\n{exc}", public=f"{headline}; {exc.public or 'see the log'}") from None


@contextlib.contextmanager
def _nodes(spec: StageSpec, config: TuneConfig, place: Place, folder: str, out: Path) -> Iterator[_Node]:
    """This node's rendezvous and log file; on several nodes, the port agreed and every node's log in node 0's."""
    if spec.launch != "torchrun":
        yield _Node(place.node, None)
        return
    logs = place.storage.child(f"{folder}/logs")
    node, timeout = place.node, spec.failure_timeout_s(config) or 600
    if node.main_port == 0:
        port = agreed_port(logs, node, place.attempt, timeout) if node.num_nodes > 1 else free_port()
        node = replace(node, main_port=port)
    log_file = out / "logs" / f"node-{node.node_rank}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")  # this attempt's log only
    if node.node_rank != 0:
        mark_node_running(logs, node.node_rank)
    failed = True
    try:
        yield _Node(node, log_file)
        failed = False
    finally:
        if node.node_rank != 0:
            publish_node_log(log_file, logs, node.node_rank, 1 if failed else 0)
        elif node.num_nodes > 1:
            # Healthy peers finish within seconds of us; a dead one never writes its marker.
            collect_node_logs(out / "logs", logs, node.num_nodes, wait_s=min(timeout, 60) if failed else timeout)


def _following(
    spec: StageSpec, storage: Storage, folder: str, out: Path, on_progress: Callable[[Any], None] | None
) -> contextlib.AbstractContextManager:
    """While the stage runs: its live file read for the card, and published where the stored folder is elsewhere."""
    live = spec.live
    if live is None or (on_progress is None and not live.publish):
        return contextlib.nullcontext()
    path = out / live.file

    def changed(value: Any) -> None:
        if live.publish and path.is_file():  # in place already when the storage is on this machine
            storage.put_file(path, f"{folder}/{live.file}")
        if on_progress is not None:
            on_progress(value)

    return FileWatcher(path, live.read, changed, LIVE_INTERVAL_S, f"{spec.name} live file")


def _summary(spec: StageSpec, out: Path) -> tuple[str, Any] | None:
    """The summary the entry point wrote, validated before anything is published."""
    if spec.summary is None:
        return None
    field, file = spec.summary
    path = out / file
    if not path.is_file():
        raise StageError(f"{spec.name} ended without writing its summary {file}")
    try:
        return field, TypeAdapter(spec.result.model_fields[field].annotation).validate_json(path.read_text())
    except ValidationError as exc:
        raise StageError(f"{spec.name}'s summary {file} does not match its model: {exc}") from None


def publish_result(
    spec: StageSpec,
    storage: Storage,
    folder: str,
    out: Path,
    inputs: Inputs,
    more: Mapping[str, Any] | None = None,
) -> BaseModel:
    """Publish a written output folder (here, or a SageMaker job's) as the spec's outputs; its typed result."""
    fields: dict[str, Any] = dict(more or {})
    summary = _summary(spec, out)
    if summary is not None:
        fields[summary[0]] = summary[1]
    if spec.read_more is not None:
        fields |= spec.read_more(out)
    for output in spec.outputs:
        local = out / output.folder
        if not local.is_dir() or not any(local.iterdir()):
            if output.optional:
                fields[output.name] = None
                continue
            raise StageError(f"{spec.name} ended without writing its {output.name} ({local})")
        # Checkpoint shards that other machines (or SageMaker's hosts) stored join the manifest without coming here.
        elsewhere = checkpoint_entries(storage.child(f"{folder}/{CHECKPOINTS}")) if spec.checkpoints else []
        stored_as = folder if output.folder == "." else f"{folder}/{output.folder}"
        fields[output.name] = storage.seal(local, stored_as, elsewhere)
    for name in spec.passes:
        fields[name] = inputs.get(name)
    return spec.result.model_validate(fields)


def stage_inputs_record(inputs: Inputs) -> str:
    """The references of a job's inputs, as JSON for its container to check each channel against."""
    refs = {name: ref.to_dict() for name, ref in inputs.items() if isinstance(ref, StoredDir)}
    return json.dumps(refs, indent=1)
