"""What a step tells the runner about itself: the run's files, its job's name, its node, the run it resumes.

Everything here comes from Metaflow's `current`; the runner (`steps.dispatch.runner`) never imports Metaflow.
"""

from __future__ import annotations

from metaflow import current

from steps.dispatch.job_names import training_job_name
from steps.dispatch.runner import Place
from steps.runtime.launch import Rendezvous
from steps.runtime.storage import Storage, open_storage


def run_storage(flow, run_id: str | None = None) -> Storage:
    """`<datastore root>/<flow>/<run id>/files`: the local .metaflow folder, or the S3 datastore root.

    Metaflow exposes the datastore root only on the task's datastore object; reading it
    there keeps our files wherever the user pointed Metaflow (--datastore, METAFLOW_DATASTORE_SYSROOT_*).
    """
    root = flow._datastore._storage_impl.datastore_root
    return open_storage(f"{root}/{current.flow_name}/{run_id or current.run_id}/files")


def step_place(flow, parallel=None) -> Place:
    """This step's place; `parallel`: `current.parallel` in a `@parallel` step, whose nodes meet."""
    node = Rendezvous(main_port=0)
    if parallel is not None:
        node = Rendezvous(parallel.num_nodes, parallel.node_index, parallel.main_ip, main_port=0)
    return Place(
        storage=run_storage(flow),
        job_name=training_job_name(current.flow_name, current.run_id, current.retry_count, current.step_name),
        node=node,
        attempt=current.retry_count,
        resumes=run_storage(flow, current.origin_run_id) if current.origin_run_id else None,
    )


def keep(flow, result) -> None:
    """Each field of a stage's result as the artifact of that name (plain data: its `model_dump()`)."""
    for name, value in result.model_dump().items():
        setattr(flow, name, value)
