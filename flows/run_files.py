"""Where this run's files live: beside Metaflow's own artifacts, in the same datastore."""

from __future__ import annotations

from metaflow import current

from steps.storage import RunStorage


def run_storage(flow, run_id: str | None = None) -> RunStorage:
    """`<datastore root>/<flow>/<run id>/files`: the local .metaflow folder, or the S3 datastore root.

    Metaflow exposes the datastore root only on the task's datastore object; reading it
    there keeps our files wherever the user pointed Metaflow (--datastore, METAFLOW_DATASTORE_SYSROOT_*).
    """
    root = flow._datastore._storage_impl.datastore_root
    return RunStorage(f"{root}/{current.flow_name}/{run_id or current.run_id}/files")


def resumed_checkpoints(flow) -> list[str]:
    """Checkpoint roots of the run this one resumes (`resume`), so training continues where it stopped.

    Both places a train step may have written: under torchrun here or on Batch/Kubernetes,
    and as a SageMaker job; the newest complete checkpoint among them wins.
    """
    if not current.origin_run_id:
        return []
    origin = run_storage(flow, current.origin_run_id)
    return [origin.uri("train/checkpoints"), origin.uri("sagemaker/checkpoints")]
