"""compute.<step>: targets, each with only its own fields, resources, and the decorators they become."""

from __future__ import annotations

import pytest

from steps.config import BatchCompute, ConfigError, KubernetesCompute, SageMakerCompute, validate_config
from steps.dispatch.decorators import flow_decorators, step_decorators, train_tasks

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tune:abc"
ROLE = "arn:aws:iam::123456789012:role/tune-sagemaker"


def _errors(compute: dict, **sections) -> str:
    with pytest.raises(ConfigError) as failure:
        validate_config({"compute": compute, **sections})
    return str(failure.value)


def test_everything_is_local_by_default() -> None:
    config = validate_config({})
    assert all(not decorators for decorators in flow_decorators(config).values())
    assert train_tasks(validate_config({"train": {"num_nodes": 3}})) == 3


@pytest.mark.parametrize(
    ("compute", "expected"),
    [
        (
            {"prepare": {"target": "sagemaker", "image": IMAGE, "instance_type": "ml.m5.xlarge", "role_arn": ROLE}},
            "compute.prepare.target: got 'sagemaker', only train, convert, instruct, evaluate run as SageMaker jobs",
        ),
        ({"evaluate": {"target": "sagemaker", "image": IMAGE, "role_arn": ROLE}}, "compute.evaluate.instance_type"),
        ({"train": {"target": "batch"}}, "compute.train.image: required for target 'batch'"),
        (
            {"train": {"target": "sagemaker", "image": IMAGE, "role_arn": ROLE}},
            "compute.train.instance_type: required for target 'sagemaker'",
        ),
        (
            {"train": {"target": "sagemaker", "image": IMAGE, "instance_type": "p4d.24xlarge", "role_arn": ROLE}},
            "SageMaker needs an ml.* instance type",
        ),
        (
            {"train": {"target": "sagemaker", "image": IMAGE, "instance_type": "ml.g5.xlarge", "role_arn": "tune"}},
            "compute.train.role_arn: got 'tune'",
        ),
        (
            {"evaluate": {"target": "batch", "image": IMAGE, "spot": True}},
            "compute.evaluate.spot: not a field of target 'batch' (its fields: secrets, workers, image, cpus",
        ),
        ({"prepare": {"target": "kubernetes", "image": IMAGE, "efa": 1}}, "compute.prepare.efa: not a field of target"),
        (
            {"prepare": {"target": "batch", "image": IMAGE, "namespace": "ml"}},
            "compute.prepare.namespace: not a field of target 'batch'",
        ),
        ({"evaluate": {"gpus": 2}}, "compute.evaluate.gpus: not a field of target 'local' (its fields: secrets"),
        ({"train": {"target": "gpu-cloud"}}, "compute.train: got {'target': 'gpu-cloud'}, input tag 'gpu-cloud'"),
        ({"train": {"target": "batch", "image": IMAGE, "gpu": 4}}, "compute.train.gpu: not a field of target 'batch'"),
        (
            {
                "train": {
                    "target": "sagemaker",
                    "image": IMAGE,
                    "instance_type": "ml.g5.xlarge",
                    "role_arn": ROLE,
                    "spot": True,
                    "max_run_hours": 10,
                    "max_wait_hours": 5,
                }
            },
            "compute.train.max_wait_hours: got 5.0, must be at least max_run_hours",
        ),
    ],
)
def test_bad_combinations_name_field_and_value(compute: dict, expected: str) -> None:
    assert expected in _errors(compute)


SAGEMAKER = {"target": "sagemaker", "image": IMAGE, "instance_type": "ml.g5.12xlarge", "role_arn": ROLE}


@pytest.mark.parametrize(
    ("step", "compute", "expected"),
    [
        ("train", {**SAGEMAKER, "instance_count": 2}, "compute.train.instance_count: got 2; the train job's hosts are"),
        ("convert", {**SAGEMAKER, "instance_count": 2}, "compute.convert.instance_count: got 2; convert runs on one"),
        (
            "evaluate",
            {"target": "batch", "image": IMAGE, "instance_count": 2},
            "compute.evaluate.instance_count: not a field of target 'batch'",
        ),
        ("evaluate", {**SAGEMAKER, "instance_count": 0}, "compute.evaluate.instance_count: got 0"),
    ],
)
def test_only_an_evaluate_job_takes_a_host_count(step: str, compute: dict, expected: str) -> None:
    assert expected in _errors({step: compute})


def test_an_evaluate_job_on_several_hosts_is_valid() -> None:
    config = validate_config({"compute": {"evaluate": {**SAGEMAKER, "instance_count": 3}}})
    assert config.compute.evaluate.instance_count == 3 and config.compute.train.target == "local"


def test_gpus_must_match_processes_per_node() -> None:
    message = _errors({"train": {"target": "kubernetes", "image": IMAGE, "gpus": 8}}, train={"nproc_per_node": 4})
    assert "compute.train.gpus (8) must equal train.nproc_per_node (4)" in message


def test_batch_decorator_arguments() -> None:
    step = BatchCompute(
        target="batch", image=IMAGE, cpus=44, memory_mb=180000, gpus=4, shared_memory_mb=65536, efa=1, queue="q"
    )
    assert step_decorators(step) == [
        (
            "batch",
            {
                "image": IMAGE,
                "cpu": 44,
                "memory": 180000,
                "gpu": 4,
                "queue": "q",
                "shared_memory": 65536,
                "efa": 1,
            },
        )
    ]


def test_kubernetes_with_secrets_and_sagemaker_without() -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tune/hub"
    kubernetes = KubernetesCompute(target="kubernetes", image=IMAGE, gpus=2, namespace="ml", secrets=[secret])
    assert step_decorators(kubernetes) == [
        ("kubernetes", {"image": IMAGE, "cpu": 4, "memory": 16384, "gpu": 2, "namespace": "ml"}),
        ("secrets", {"sources": [secret]}),
    ]
    sagemaker = SageMakerCompute(
        target="sagemaker", image=IMAGE, instance_type="ml.g5.xlarge", role_arn=ROLE, secrets=[secret]
    )
    assert step_decorators(sagemaker) == []  # the job reads its secrets itself; the submitting step needs none
    config = validate_config({"train": {"num_nodes": 4}, "compute": {"train": sagemaker.model_dump()}})
    assert train_tasks(config) == 1  # one task submits the 4-instance job


def test_each_target_takes_its_own_fields_only() -> None:
    """A section is one target's: a field another target uses is named with the fields this one has."""
    assert set(BatchCompute.model_fields) - set(KubernetesCompute.model_fields) == {"queue", "role_arn", "efa"}
    assert "instance_count" in SageMakerCompute.model_fields and "cpus" not in SageMakerCompute.model_fields
    message = _errors({"convert": {**SAGEMAKER, "cpus": 8, "queue": "q"}})
    assert "compute.convert.cpus: not a field of target 'sagemaker'" in message
    assert "compute.convert.queue: not a field of target 'sagemaker'" in message and "instance_type" in message
