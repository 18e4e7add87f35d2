"""Where this run's files live: beside Metaflow's own artifacts, in the same datastore."""

from __future__ import annotations

from metaflow import current

from steps.storage import RunStorage


def run_storage(flow) -> RunStorage:
    """`<datastore root>/<flow>/<run id>/files`: the local .metaflow folder, or the S3 datastore root.

    Metaflow exposes the datastore root only on the task's datastore object; reading it
    there keeps our files wherever the user pointed Metaflow (--datastore, METAFLOW_DATASTORE_SYSROOT_*).
    """
    root = flow._datastore._storage_impl.datastore_root
    return RunStorage(f"{root}/{current.flow_name}/{current.run_id}/files")
