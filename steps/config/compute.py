"""Where each step runs: the `compute` section, one section per dispatched step, its fields those of its target.

`compute.<step>.target` picks the kind of section: `local`, `batch`, `kubernetes` or
`sagemaker`, each with only the fields that target uses, so a field of another target
is an error naming the target's own fields. What depends on the step, not the target
(which steps may be SageMaker jobs, fan out or run on several hosts), is checked once
in `ComputeConfig`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from steps.config.base import Section

ComputeTarget = Literal["local", "batch", "kubernetes", "sagemaker"]
SAGEMAKER_STEPS = ("train", "convert", "instruct", "evaluate")
"""Steps that can run as a SageMaker job (prepare reads local sources and stays on Metaflow's targets)."""


class _Placed(Section):
    secrets: list[str] = []
    """AWS Secrets Manager secret ARNs or names whose keys become environment values inside the step or job."""
    workers: int = Field(1, ge=1, le=1024)
    """prepare only: corpus shards read and tokenized by this many Metaflow foreach tasks (each on its own node
    with a remote target); 1 reads the whole corpus in one task. The dataset is the same for any number."""


class LocalCompute(_Placed):
    """This machine (the GPUs it has)."""

    target: Literal["local"] = "local"


class _Container(_Placed):
    image: str
    """Container image (ECR URI from containers/build_and_push.sh)."""
    cpus: int = Field(4, ge=1)
    """vCPUs per node."""
    memory_mb: int = Field(16384, ge=512)
    """Memory per node in MiB."""
    gpus: int = Field(0, ge=0)
    """GPUs per node."""
    shared_memory_mb: int | None = Field(None, ge=64)
    """Size of /dev/shm in MiB; NCCL and DataLoader workers need far more than Docker's 64 MiB default."""


class BatchCompute(_Container):
    """AWS Batch, through Metaflow's @batch (multi-node train through @parallel)."""

    target: Literal["batch"]
    queue: str | None = None
    """AWS Batch job queue (default: METAFLOW_BATCH_JOB_QUEUE); Spot comes from the queue's compute environment."""
    role_arn: str | None = None
    """The Batch job's IAM role (`iam_role`)."""
    efa: int = Field(0, ge=0)
    """EFA network devices per node (p4d/p5 instances; multi-node NCCL)."""


class KubernetesCompute(_Container):
    """Kubernetes, through Metaflow's @kubernetes."""

    target: Literal["kubernetes"]
    namespace: str | None = None
    """Kubernetes namespace (default: METAFLOW_KUBERNETES_NAMESPACE)."""


class SageMakerCompute(_Placed):
    """A SageMaker training job running the stage in our container: train on train.num_nodes hosts, evaluate on
    instance_count, convert on one."""

    target: Literal["sagemaker"]
    image: str
    """Container image (ECR URI from containers/build_and_push.sh)."""
    instance_type: str
    """SageMaker instance type, e.g. ml.p4d.24xlarge (its GPUs are the ranks per host)."""
    role_arn: str
    """SageMaker execution role ARN."""
    spot: bool = False
    """Managed Spot; an interrupted job resumes from its checkpoint."""
    max_run_hours: float = Field(24.0, gt=0.0, le=672.0)
    """Stop the job after this many hours of training."""
    max_wait_hours: float | None = Field(None, gt=0.0, le=672.0)
    """With spot: give up after this many hours including waiting for capacity (default 2 x max_run_hours)."""
    instance_count: int = Field(1, ge=1)
    """Hosts of an evaluate job (each with all its GPUs; the ranks of all hosts share the prompts). Train takes
    its hosts from train.num_nodes; convert runs on one."""
    volume_gb: int = Field(100, ge=1)
    """Storage volume per instance in GB."""

    @model_validator(mode="after")
    def _sagemaker_values(self) -> SageMakerCompute:
        problems = []
        if not self.instance_type.startswith("ml."):
            problems.append(f"instance_type: got {self.instance_type!r}, SageMaker needs an ml.* instance type")
        if not self.role_arn.startswith("arn:aws"):
            problems.append(f"role_arn: got {self.role_arn!r}, SageMaker needs an IAM role ARN")
        if self.max_wait_hours is not None and not self.spot:
            problems.append("max_wait_hours: only applies with spot: true")
        if self.spot and self.max_wait_hours is not None and self.max_wait_hours < self.max_run_hours:
            problems.append(
                f"max_wait_hours: got {self.max_wait_hours}, must be at least max_run_hours ({self.max_run_hours})"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self


StepCompute = Annotated[
    LocalCompute | BatchCompute | KubernetesCompute | SageMakerCompute, Field(discriminator="target")
]
TARGETS: dict[str, type[Section]] = {
    "local": LocalCompute,
    "batch": BatchCompute,
    "kubernetes": KubernetesCompute,
    "sagemaker": SageMakerCompute,
}


class ComputeConfig(Section):
    """Per-step compute. `start` and `end` always run where the flow was launched."""

    prepare: StepCompute = LocalCompute()
    train: StepCompute = LocalCompute()
    convert: StepCompute = LocalCompute()
    """Also converts the instruction-tuned checkpoint (merging LoRA adapters)."""
    instruct: StepCompute = LocalCompute()
    """Instruction tuning (instruct.*): on train.num_nodes machines like train."""
    evaluate: StepCompute = LocalCompute()

    @model_validator(mode="before")
    @classmethod
    def _fields_of_each_target(cls, raw: Any) -> Any:
        """A field of another target names the target's own fields (pydantic would only say "extra")."""
        if not isinstance(raw, dict):
            return raw
        problems = []
        for step, section in raw.items():
            if not isinstance(section, dict) or section.get("target", "local") not in TARGETS:
                continue
            target = section.get("target", "local")
            allowed = TARGETS[target].model_fields
            for field in sorted(set(section) - set(allowed)):
                problems.append(
                    f"compute.{step}.{field}: not a field of target {target!r} (its fields: {', '.join(allowed)})"
                )
        if problems:
            raise ValueError("\n  ".join(problems))
        return {
            step: {"target": "local", **section} if isinstance(section, dict) else section
            for step, section in raw.items()
        }

    @model_validator(mode="after")
    def _steps_fit_targets(self) -> ComputeConfig:
        problems = []
        for name in type(self).model_fields:
            step = getattr(self, name)
            if step.target == "sagemaker" and name not in SAGEMAKER_STEPS:
                problems.append(
                    f"compute.{name}.target: got 'sagemaker', only {', '.join(SAGEMAKER_STEPS)} run as SageMaker "
                    "jobs; use local, batch or kubernetes"
                )
            if step.workers != 1 and name != "prepare":
                problems.append(
                    f"compute.{name}.workers: got {step.workers}, only compute.prepare fans out over workers "
                    "(train scales with train.num_nodes); remove it"
                )
            count = getattr(step, "instance_count", 1)
            if count != 1 and name != "evaluate":
                # A train job's hosts are train.num_nodes; convert reads one checkpoint in a single process.
                trains = name in ("train", "instruct")
                where = f"the {name} job's hosts are train.num_nodes" if trains else f"{name} runs on one host"
                problems.append(f"compute.{name}.instance_count: got {count}; {where}, remove it")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self
