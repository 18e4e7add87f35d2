"""Where this run's files live: beside Metaflow's own artifacts, in the same datastore."""

from __future__ import annotations

from metaflow import Task, current

from steps.dispatch.targets import checkpoint_roots
from steps.runtime.storage import Storage, StoredDir, open_storage


def datastore_root() -> str:
    """The datastore root this task's artifacts go to: the local .metaflow folder or the S3 root.

    Read, through the client, from the task's own `ds-root` metadata: Metaflow records it before the step
    runs, under local metadata and a metadata service alike, from whatever chose the root (--datastore,
    --datastore-root, METAFLOW_DATASTORE_SYSROOT_*), and its client finds a task's logs and cards by it.
    In a @parallel step it is the control task's record (every node shares the run's root): a metadata
    service may know a node task by another id (metaflow-local-service 0.2.0 does not know `<id>_node_1`).
    """
    parallel = getattr(current, "parallel", None)
    task_id = parallel.control_task_id if parallel is not None and parallel.control_task_id else current.task_id
    task = Task(f"{current.flow_name}/{current.run_id}/{current.step_name}/{task_id}", _namespace_check=False)
    return task.metadata_dict["ds-root"]


def run_storage(flow, run_id: str | None = None) -> Storage:
    """`<datastore root>/<flow>/<run id>/files`: the local .metaflow folder, or the S3 datastore root."""
    return open_storage(f"{datastore_root()}/{current.flow_name}/{run_id or current.run_id}/files")


def resumed_checkpoints(flow) -> list[str]:
    """Checkpoint roots of the run this one resumes (`resume`), so training continues where it stopped."""
    return checkpoint_roots(run_storage(flow, current.origin_run_id)) if current.origin_run_id else []


def base_model_copy(flow) -> StoredDir | None:
    """Prepare's dequantized copy of a GGUF base model, wherever prepare ran: after `resume`, prepare is the
    resumed run's (cloned), and so is the copy, which train and evaluate then load instead of making another.
    None for other base models, and for runs whose prepare predates the artifact."""
    copy = getattr(flow, "base_model_copy", None)
    return StoredDir.from_dict(copy) if copy else None
