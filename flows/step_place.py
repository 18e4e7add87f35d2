"""What a step tells the runner about itself: the run's files, its job's name, its node, the run it resumes.

Everything here comes from Metaflow's `current`; the runner (`steps.dispatch.runner`) never imports Metaflow.
"""

from __future__ import annotations

from metaflow import Task, current

from steps.dispatch.job_names import training_job_name
from steps.dispatch.runner import Place
from steps.runtime.launch import Rendezvous
from steps.runtime.storage import Storage, open_storage


def datastore_root() -> str:
    """The datastore root this task's artifacts go to: the local .metaflow folder or the S3 root.

    Read, through the client, from the task's own `ds-root` metadata: Metaflow records it before the step
    runs, under local metadata and a metadata service alike, from whatever chose the root (--datastore,
    --datastore-root, METAFLOW_DATASTORE_SYSROOT_*), and its client finds a task's logs and cards by it.
    In a @parallel step it is the control task's record (every node shares the run's root): a metadata
    service may know a node task by another id (metaflow-local-service 0.2.0 does not know `<id>_node_1`).
    The client's namespace check is off: this is the step's own task, whatever namespace the client is in.
    """
    parallel = getattr(current, "parallel", None)
    task_id = parallel.control_task_id if parallel is not None and parallel.control_task_id else current.task_id
    task = Task(f"{current.flow_name}/{current.run_id}/{current.step_name}/{task_id}", _namespace_check=False)
    return task.metadata_dict["ds-root"]


def run_storage(run_id: str | None = None) -> Storage:
    """`<datastore root>/<flow>/<run id>/files`: the local .metaflow folder, or the S3 datastore root."""
    return open_storage(f"{datastore_root()}/{current.flow_name}/{run_id or current.run_id}/files")


def step_place(parallel=None) -> Place:
    """This step's place; `parallel`: `current.parallel` in a `@parallel` step, whose nodes meet."""
    node = Rendezvous(main_port=0)
    if parallel is not None:
        node = Rendezvous(parallel.num_nodes, parallel.node_index, parallel.main_ip, main_port=0)
    return Place(
        storage=run_storage(),
        job_name=training_job_name(current.flow_name, current.run_id, current.retry_count, current.step_name),
        node=node,
        attempt=current.retry_count,
        resumes=run_storage(current.origin_run_id) if current.origin_run_id else None,
    )


def keep(flow, result) -> None:
    """Each field of a stage's result as the artifact of that name (plain data: its `model_dump()`)."""
    for name, value in result.model_dump().items():
        setattr(flow, name, value)
