"""Which Metaflow decorators put a step on AWS Batch or Kubernetes, from `compute.<step>`.

Plain data in, (decorator name, keyword arguments) out: the flow's mutator
(flows/compute_mutator.py) applies them, and tests check them without Metaflow.
A `sagemaker` train, convert or evaluate step stays where the flow runs; the runner
submits a SageMaker job itself (`steps.dispatch.sagemaker_job`).
"""

from __future__ import annotations

from typing import Any

from steps.config import BatchCompute, KubernetesCompute, StepCompute, TuneConfig


def _set(options: dict[str, Any]) -> dict[str, Any]:
    """The options given a value: the decorators' own defaults stand for the others."""
    return {key: value for key, value in options.items() if value}


def step_decorators(step: StepCompute) -> list[tuple[str, dict[str, Any]]]:
    """Decorators (name, kwargs) for one step; empty for a local or SageMaker step."""
    decorators: list[tuple[str, dict[str, Any]]] = []
    if isinstance(step, BatchCompute):
        kwargs = {"image": step.image, "cpu": step.cpus, "memory": step.memory_mb, "gpu": step.gpus}
        kwargs |= _set({"queue": step.queue, "iam_role": step.role_arn, "efa": step.efa})
        kwargs |= _set({"shared_memory": step.shared_memory_mb})
        decorators.append(("batch", kwargs))
    elif isinstance(step, KubernetesCompute):
        kwargs = {"image": step.image, "cpu": step.cpus, "memory": step.memory_mb}
        kwargs |= _set({"gpu": step.gpus, "namespace": step.namespace, "shared_memory": step.shared_memory_mb})
        decorators.append(("kubernetes", kwargs))
    # A SageMaker job reads its secrets itself (by ARN); everywhere else @secrets
    # sets them in the step's environment at run time, out of the job definition.
    if step.secrets and step.target != "sagemaker":
        decorators.append(("secrets", {"sources": list(step.secrets)}))
    return decorators


def flow_decorators(config: TuneConfig) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The decorators of every dispatched step of the flow."""
    return {name: step_decorators(getattr(config.compute, name)) for name in type(config.compute).model_fields}


def train_tasks(config: TuneConfig, step: str = "train") -> int:
    """Metaflow tasks of a training step (train, instruct): one per node, or one that submits the whole SageMaker
    job."""
    return 1 if getattr(config.compute, step).target == "sagemaker" else config.train.num_nodes
