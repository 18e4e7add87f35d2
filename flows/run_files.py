"""Where this run's files live: beside Metaflow's own artifacts, in the same datastore."""

from __future__ import annotations

from metaflow import current

from steps.dispatch.targets import checkpoint_roots
from steps.runtime.storage import Storage, StoredDir, open_storage


def run_storage(flow, run_id: str | None = None) -> Storage:
    """`<datastore root>/<flow>/<run id>/files`: the local .metaflow folder, or the S3 datastore root.

    Metaflow exposes the datastore root only on the task's datastore object; reading it
    there keeps our files wherever the user pointed Metaflow (--datastore, METAFLOW_DATASTORE_SYSROOT_*).
    """
    root = flow._datastore._storage_impl.datastore_root
    return open_storage(f"{root}/{current.flow_name}/{run_id or current.run_id}/files")


def resumed_checkpoints(flow) -> list[str]:
    """Checkpoint roots of the run this one resumes (`resume`), so training continues where it stopped."""
    return checkpoint_roots(run_storage(flow, current.origin_run_id)) if current.origin_run_id else []


def base_model_copy(flow) -> StoredDir | None:
    """Prepare's dequantized copy of a GGUF base model, wherever prepare ran: after `resume`, prepare is the
    resumed run's (cloned), and so is the copy, which train and evaluate then load instead of making another.
    None for other base models, and for runs whose prepare predates the artifact."""
    copy = getattr(flow, "base_model_copy", None)
    return StoredDir.from_dict(copy) if copy else None
