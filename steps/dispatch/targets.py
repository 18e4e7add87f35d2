"""Which machine runs a stage, from `compute.<step>.target`.

`local`, `batch` and `kubernetes` run the stage's controller in the step's own
process (Metaflow's decorators put that process on Batch or Kubernetes); a
`sagemaker` train, convert or evaluate step submits a SageMaker job instead, waits
for it and publishes the same folder the local stage would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from steps.config import TuneConfig
from steps.convert.stage import convert_stage
from steps.dispatch.job_names import CHECKPOINTS_FOLDER, JobName
from steps.evaluate.stage import evaluate_stage
from steps.formats.train_folder import CHECKPOINTS
from steps.results import ConvertResult, EvaluateResult, TrainMetric, TrainResult, TrainSummary
from steps.runtime.launch import Rendezvous
from steps.runtime.storage import Storage, StoredDir
from steps.train.stage import TRAIN, train_stage

# The SageMaker modules are imported only in a step that submits a job: they import the SageMaker SDK, which
# takes about a second, and the flow file (imported by every Metaflow step and card-refresh process) imports this
# module. A 4-step flow imports the flow file about 20 times.


def train_on_target(
    config: TuneConfig,
    storage: Storage,
    dataset: StoredDir,
    tokenizer: StoredDir,
    rdzv: Rendezvous,
    resume_from: Sequence[str],
    on_metrics: Callable[[list[TrainMetric]], None] | None,
    job_name: JobName,
    base_model_copy: StoredDir | None = None,
) -> TrainResult | None:
    """Train where `compute.train` says: under torchrun on this node, or as a SageMaker job named `job_name`.

    Returns the result on the node that holds it (node 0, or the one task that submitted the job); None elsewhere.
    `base_model_copy`: prepare's dequantized copy of a GGUF base model (`PrepareResult.base_model_copy`).
    """
    if config.compute.train.target == "sagemaker":
        from steps.dispatch.sagemaker_job import sagemaker_train_stage

        return sagemaker_train_stage(
            config, storage, dataset, tokenizer, job_name, resume_from=resume_from, base_model_copy=base_model_copy
        )
    return train_stage(
        config, storage, dataset, tokenizer, rdzv, resume_from, on_metrics, base_model_copy=base_model_copy
    )


def checkpoint_roots(storage: Storage) -> list[str]:
    """Every place a run's train step keeps checkpoints: under torchrun here or on Batch/Kubernetes, and as a
    SageMaker job. A resumed run looks in all of them, and the newest complete checkpoint wins."""
    return [storage.uri(f"{TRAIN}/{CHECKPOINTS}"), storage.uri(CHECKPOINTS_FOLDER)]


def convert_on_target(
    config: TuneConfig, storage: Storage, checkpoint: StoredDir, tokenizer: StoredDir, job_name: JobName
) -> ConvertResult:
    """Convert in this step's process, or as a SageMaker job named `job_name`."""
    if config.compute.convert.target == "sagemaker":
        from steps.dispatch.sagemaker_stages import sagemaker_convert_stage

        return sagemaker_convert_stage(config, storage, checkpoint, tokenizer, job_name)
    return convert_stage(config, storage, checkpoint, tokenizer)


def evaluate_on_target(
    config: TuneConfig,
    storage: Storage,
    model: StoredDir,
    dataset: StoredDir,
    train_summary: TrainSummary,
    job_name: JobName,
    on_progress: Callable[[str], None] | None = None,
    base_model_copy: StoredDir | None = None,
) -> EvaluateResult:
    """Evaluate in this step's process, or as a SageMaker job named `job_name`; `on_progress` gets the local
    stage's progress lines (a SageMaker job's go to its log, which the step follows)."""
    if config.compute.evaluate.target == "sagemaker":
        from steps.dispatch.sagemaker_stages import sagemaker_evaluate_stage

        return sagemaker_evaluate_stage(
            config, storage, model, dataset, train_summary, job_name, base_model_copy=base_model_copy
        )
    return evaluate_stage(
        config, storage, model, dataset, train_summary, on_progress=on_progress, base_model_copy=base_model_copy
    )
