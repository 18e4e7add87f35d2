"""Which machine runs a stage, from `compute.<step>.target`.

`local`, `batch` and `kubernetes` run the stage's controller in the step's own
process (Metaflow's decorators put that process on Batch or Kubernetes); a
`sagemaker` train step submits a training job instead and waits for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from steps.config import TuneConfig
from steps.dispatch.sagemaker_job import CHECKPOINTS_FOLDER, sagemaker_train_stage
from steps.formats.train_folder import CHECKPOINTS
from steps.results import TrainMetric, TrainResult
from steps.runtime.launch import Rendezvous
from steps.runtime.storage import Storage, StoredDir
from steps.train.stage import TRAIN, train_stage


def train_on_target(
    config: TuneConfig,
    storage: Storage,
    dataset: StoredDir,
    tokenizer: StoredDir,
    rdzv: Rendezvous,
    resume_from: Sequence[str],
    on_metrics: Callable[[list[TrainMetric]], None] | None,
    job_name: str,
) -> TrainResult | None:
    """Train where `compute.train` says: under torchrun on this node, or as a SageMaker job named `job_name`.

    Returns the result on the node that holds it (node 0, or the one task that submitted the job); None elsewhere.
    """
    if config.compute.train.target == "sagemaker":
        return sagemaker_train_stage(config, storage, dataset, tokenizer, job_name, resume_from=resume_from)
    return train_stage(config, storage, dataset, tokenizer, rdzv, resume_from, on_metrics)


def checkpoint_roots(storage: Storage) -> list[str]:
    """Every place a run's train step keeps checkpoints: under torchrun here or on Batch/Kubernetes, and as a
    SageMaker job. A resumed run looks in all of them, and the newest complete checkpoint wins."""
    return [storage.uri(f"{TRAIN}/{CHECKPOINTS}"), storage.uri(CHECKPOINTS_FOLDER)]
