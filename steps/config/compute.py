"""Where each step runs: the `compute` section, one `StepCompute` per dispatched step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from steps.config.base import Section

ComputeTarget = Literal["local", "batch", "kubernetes", "sagemaker"]
SAGEMAKER_STEPS = ("train", "convert", "evaluate")
"""Steps that can run as a SageMaker job (prepare reads local sources and stays on Metaflow's targets)."""


class StepCompute(Section):
    """Where one step runs and what it gets; only the fields of its target are used."""

    target: ComputeTarget = "local"
    """`local` (this machine), `batch` (AWS Batch), `kubernetes`, or `sagemaker` (a SageMaker training job running
    the stage in our container: train on train.num_nodes hosts, evaluate on instance_count, convert on one)."""
    image: str | None = None
    """Container image (ECR URI from containers/build_and_push.sh); required for every remote target."""
    cpus: int = Field(4, ge=1)
    """vCPUs per node (Batch, Kubernetes)."""
    memory_mb: int = Field(16384, ge=512)
    """Memory per node in MiB (Batch, Kubernetes)."""
    gpus: int = Field(0, ge=0)
    """GPUs per node (Batch, Kubernetes); on SageMaker the instance type decides."""
    shared_memory_mb: int | None = Field(None, ge=64)
    """Size of /dev/shm in MiB; NCCL and DataLoader workers need far more than Docker's 64 MiB default."""
    instance_type: str | None = None
    """SageMaker instance type, e.g. ml.p4d.24xlarge (required for sagemaker)."""
    spot: bool = False
    """SageMaker managed Spot; an interrupted job resumes from its checkpoint. Batch takes Spot from its queue."""
    max_run_hours: float = Field(24.0, gt=0.0, le=672.0)
    """SageMaker: stop the job after this many hours of training."""
    max_wait_hours: float | None = Field(None, gt=0.0, le=672.0)
    """SageMaker with spot: give up after this many hours including waiting for capacity (default 2 x max_run)."""
    role_arn: str | None = None
    """SageMaker execution role (required for sagemaker); Batch job role (`iam_role`) when set for batch."""
    queue: str | None = None
    """AWS Batch job queue (default: METAFLOW_BATCH_JOB_QUEUE)."""
    efa: int = Field(0, ge=0)
    """EFA network devices per node on Batch (p4d/p5 instances; multi-node NCCL)."""
    namespace: str | None = None
    """Kubernetes namespace (default: METAFLOW_KUBERNETES_NAMESPACE)."""
    instance_count: int = Field(1, ge=1)
    """SageMaker hosts of an evaluate job (each with all its GPUs; the ranks of all hosts share the prompts).
    Train takes its hosts from train.num_nodes; convert runs on one host."""
    volume_gb: int = Field(100, ge=1)
    """SageMaker storage volume per instance in GB."""
    secrets: list[str] = []
    """AWS Secrets Manager secret ARNs or names whose keys become environment values inside the step or job."""
    workers: int = Field(1, ge=1, le=1024)
    """prepare only: corpus shards read and tokenized by this many Metaflow foreach tasks (each on its own node
    with a remote target); 1 reads the whole corpus in one task. The dataset is the same for any number."""


class ComputeConfig(Section):
    """Per-step compute. `start` and `end` always run where the flow was launched."""

    prepare: StepCompute = StepCompute()
    train: StepCompute = StepCompute()
    convert: StepCompute = StepCompute()
    evaluate: StepCompute = StepCompute()

    @model_validator(mode="after")
    def _targets_fit(self) -> ComputeConfig:
        problems = []
        for name in type(self).model_fields:
            problems += _step_compute_problems(name, getattr(self, name))
        if problems:
            raise ValueError("\n  ".join(problems))
        return self


def _step_compute_problems(name: str, step: StepCompute) -> list[str]:
    field = f"compute.{name}"
    problems = []
    if step.target == "sagemaker" and name not in SAGEMAKER_STEPS:
        problems.append(
            f"{field}.target: got 'sagemaker', only {', '.join(SAGEMAKER_STEPS)} run as SageMaker jobs; "
            "use local, batch or kubernetes"
        )
    if step.target != "local" and not step.image:
        problems.append(f"{field}.image: required for target {step.target!r} (an ECR image URI)")
    if step.target == "sagemaker" and name in SAGEMAKER_STEPS:
        if not step.instance_type or not step.instance_type.startswith("ml."):
            problems.append(f"{field}.instance_type: got {step.instance_type!r}, SageMaker needs an ml.* instance type")
        if not step.role_arn or not step.role_arn.startswith("arn:aws"):
            problems.append(f"{field}.role_arn: got {step.role_arn!r}, SageMaker needs an IAM role ARN")
        if step.max_wait_hours is not None and not step.spot:
            problems.append(f"{field}.max_wait_hours: only applies with spot: true")
        if step.spot and step.max_wait_hours is not None and step.max_wait_hours < step.max_run_hours:
            problems.append(
                f"{field}.max_wait_hours: got {step.max_wait_hours}, must be at least max_run_hours "
                f"({step.max_run_hours})"
            )
        problems += _instance_count_problems(name, step)
    elif step.spot and step.target != "sagemaker":
        problems.append(
            f"{field}.spot: only for sagemaker; on batch pick a job queue whose compute environment uses Spot, "
            "on kubernetes a Spot node pool"
        )
    if step.target != "sagemaker" and step.instance_count != 1:
        problems.append(
            f"{field}.instance_count: got {step.instance_count}, only a sagemaker evaluate job runs on several "
            "hosts; remove it"
        )
    if step.target != "batch" and (step.efa or step.queue):
        problems.append(f"{field}: efa and queue apply to target 'batch' only, got target {step.target!r}")
    if step.target != "kubernetes" and step.namespace:
        problems.append(f"{field}.namespace: applies to target 'kubernetes' only, got target {step.target!r}")
    if step.workers != 1 and name != "prepare":
        problems.append(
            f"{field}.workers: got {step.workers}, only compute.prepare fans out over workers "
            f"(train scales with train.num_nodes); remove it"
        )
    if step.target == "local" and step.gpus:
        problems.append(f"{field}.gpus: local steps use the GPUs of this machine; set gpus with a remote target")
    return problems


def _instance_count_problems(name: str, step: StepCompute) -> list[str]:
    if step.instance_count == 1 or name == "evaluate":
        return []
    if name == "train":
        return [f"compute.train.instance_count: got {step.instance_count}; a train job's hosts are train.num_nodes"]
    # Convert reads one ZeRO checkpoint and writes one model folder in a single process: it has no work to share.
    return [f"compute.{name}.instance_count: got {step.instance_count}, {name} runs on one host; remove it"]
