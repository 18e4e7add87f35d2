"""Our container's training entrypoint under the SageMaker training contract.

SageMaker runs `docker run <image> train` on each of its hosts; containers/entrypoint.sh
turns `train` into `python -m steps.dispatch.container`. This reads:

- channels from `/opt/ml/input/data/<channel>` (`SM_CHANNEL_<NAME>` when set):
  `config` (the resolved config.json), `dataset`, `tokenizer`, optionally `base_model`;
- the hosts from `SM_HOSTS`/`SM_CURRENT_HOST` (else /opt/ml/input/config/resourceconfig.json),
  GPUs per host from `SM_NUM_GPUS` (else CUDA's count; the config's nproc_per_node on CPU);
- Secrets Manager sources named in `TUNE_SECRET_SOURCES`, whose values become environment
  values of the training processes only.

It runs `steps.train` under torchrun (the first host is the rendezvous), keeps
checkpoints in `/opt/ml/checkpoints` (SageMaker syncs them to S3 and restores them
when a Spot job restarts; train resumes from the newest complete one), and the main
host copies the training records to `/opt/ml/model`. Evaluate runs the same way across
its hosts (`TUNE_STAGE=evaluate`), convert on one. SageMaker uploads the
`/opt/ml/model` of every host into the one output prefix, so only the first host
writes there. A failure is written to
`/opt/ml/output/failure` (steps.runtime.error_text: only our own messages), which
SageMaker reports as the job's FailureReason, and
the exit status is non-zero. `SAGEMAKER_BASE_DIR` moves /opt/ml (as in the
SageMaker training toolkit), which is how the tests emulate a host without Docker.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import torch

from steps.config import load_config
from steps.dispatch.host_checkpoints import host_pruner
from steps.dispatch.sagemaker_job import SECRET_SOURCES_ENV, STAGE_ENV
from steps.evaluate.output_files import SUMMARY_FILE as EVAL_SUMMARY_FILE
from steps.formats.train_folder import OUTPUT_FILES
from steps.runtime.error_text import shown_message
from steps.runtime.launch import Rendezvous, cli_args, run_module, run_torchrun

DEFAULT_PORT = 29500
FAILURE_LIMIT = 1024
"""SageMaker keeps the first 1 KiB or so of the failure file as FailureReason."""


class ContainerError(RuntimeError):
    """The SageMaker contract is not met (missing channel, host list, config mismatch)."""


@dataclass(frozen=True)
class HostContract:
    base: Path
    hosts: list[str]
    current_host: str
    gpus: int

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    def rendezvous(self) -> Rendezvous:
        """Where torchrun's nodes meet: the first host (the same on every host: the list is sorted)."""
        port = int(os.environ.get("MASTER_PORT", DEFAULT_PORT))
        return Rendezvous(len(self.hosts), self.node_rank, self.hosts[0], port)

    def check_hosts(self, expected: int, field: str) -> None:
        """The job's hosts are the config's: the step set InstanceCount from `field`."""
        if expected != len(self.hosts):
            raise ContainerError(
                f"{field} is {expected} but the job has {len(self.hosts)} hosts; "
                f"the step sets InstanceCount from {field}, so the config channel is stale"
            )

    def model_output(self) -> Path:
        """Where this host writes its stage's result: /opt/ml/model on the first host only. SageMaker
        uploads every host's /opt/ml/model into the same prefix, where the others' files would collide."""
        if self.node_rank == 0:
            return self.base / "model"
        return Path(tempfile.mkdtemp(prefix=f"tune-host-{self.node_rank}-"))  # written by no rank; ignored

    def channel(self, name: str, required: bool = True) -> Path | None:
        path = Path(os.environ.get(f"SM_CHANNEL_{name.upper()}", self.base / "input" / "data" / name))
        if path.is_dir() and any(path.iterdir()):
            return path
        if required:
            raise ContainerError(f"input channel {name!r} is missing or empty at {path}")
        return None


def read_contract(env: dict[str, str] | None = None) -> HostContract:
    env = dict(os.environ if env is None else env)
    base = Path(env.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    resource_file = base / "input" / "config" / "resourceconfig.json"
    resources = json.loads(resource_file.read_text()) if resource_file.is_file() else {}
    hosts = json.loads(env["SM_HOSTS"]) if "SM_HOSTS" in env else resources.get("hosts")
    current = env.get("SM_CURRENT_HOST") or resources.get("current_host")
    if not hosts or current not in hosts:
        raise ContainerError(
            f"cannot tell the hosts of this job: SM_HOSTS={hosts!r}, SM_CURRENT_HOST={current!r} (nor {resource_file})"
        )
    if "SM_NUM_GPUS" in env:
        gpus = int(env["SM_NUM_GPUS"])
    else:
        gpus = torch.cuda.device_count()
    # Sorted, so that every host picks the same first host as the rendezvous.
    return HostContract(base=base, hosts=sorted(hosts), current_host=current, gpus=gpus)


def load_secrets(sources: str) -> dict[str, str]:
    """Environment values from Secrets Manager secrets (JSON key/values, or a plain string under its name)."""
    client = boto3.client("secretsmanager")
    values: dict[str, str] = {}
    for source in filter(None, (s.strip() for s in sources.split(","))):
        secret = client.get_secret_value(SecretId=source)["SecretString"]
        try:
            parsed = json.loads(secret)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            values.update({str(k): str(v) for k, v in parsed.items()})
        else:
            values[source.rsplit(":", 1)[-1].rsplit("/", 1)[-1].upper().replace("-", "_")] = secret
    return values


def run_training_host(contract: HostContract) -> Path:
    """This host's share of the job; returns the folder the main host copied the records into."""
    config = load_config(contract.channel("config") / "config.json")
    contract.check_hosts(config.train.num_nodes, "train.num_nodes")
    checkpoints = contract.base / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="tune-train-"))
    base_model = contract.channel("base_model", required=False)
    args = cli_args(
        config=contract.channel("config") / "config.json",
        dataset=contract.channel("dataset"),
        tokenizer=contract.channel("tokenizer"),
        out=out,
        base_model=base_model,
        # Checkpoints in /opt/ml/checkpoints: SageMaker uploads them as they appear and restores
        # them into a restarted Spot job, where steps.train continues from the newest complete one.
        checkpoint_uri=checkpoints,
    )
    earlier = contract.channel("checkpoints", required=False)  # the checkpoints of a run this one resumes
    if earlier is not None:
        args += ["--resume-from", str(earlier)]
    nproc = contract.gpus or config.train.nproc_per_node
    # The train loop prunes host 0's checkpoints (the records are there); every other host prunes its own.
    with host_pruner(checkpoints, config.train.keep_checkpoints, contract.node_rank):
        run_torchrun("steps.train", args, nproc, contract.rendezvous())
    model_dir = contract.base / "model"
    if contract.node_rank == 0:
        model_dir.mkdir(parents=True, exist_ok=True)
        for filename in OUTPUT_FILES:
            shutil.copy2(out / filename, model_dir / filename)
    return model_dir


def run_evaluate_host(contract: HostContract) -> Path:
    """This host's share of the evaluate stage: torchrun across all hosts, as training, so the ranks of every
    host share the prompts and probes; global rank 0 (on the first host) writes the evaluation folder."""
    config = load_config(contract.channel("config") / "config.json")
    contract.check_hosts(config.compute.evaluate.instance_count, "compute.evaluate.instance_count")
    out = contract.model_output()
    args = cli_args(
        config=contract.channel("config") / "config.json",
        model=contract.channel("model"),
        dataset=contract.channel("dataset"),
        train_summary=contract.channel("train_summary") / "train_summary.json",
        out=out,
        base_model=contract.channel("base_model", required=False),
    )
    run_torchrun("steps.evaluate", args, contract.gpus or config.evaluate.nproc, contract.rendezvous())
    if contract.node_rank == 0 and not (out / EVAL_SUMMARY_FILE).is_file():
        raise ContainerError(f"evaluate ended without writing {EVAL_SUMMARY_FILE} on the first host")
    return out


def run_convert_host(contract: HostContract) -> Path:
    """The convert stage on the job's one host (see `job_hosts`), the converted model written to /opt/ml/model."""
    model_dir = contract.base / "model"
    args = cli_args(
        config=contract.channel("config") / "config.json",
        train=contract.channel("train"),
        tokenizer=contract.channel("tokenizer"),
        out=model_dir,
    )
    run_module("steps.convert", args)
    return model_dir


STAGES = {"train": run_training_host, "evaluate": run_evaluate_host, "convert": run_convert_host}


def failure_reason(message: str, limit: int = FAILURE_LIMIT) -> str:
    """What fits SageMaker's FailureReason: the headline and the end, where the root cause is."""
    if len(message) <= limit:
        return message
    head = message.splitlines()[0][: limit // 4]
    return f"{head} [...] {message[-(limit - len(head) - 7) :]}"


def main() -> int:
    try:
        contract = read_contract()
        if os.environ.get(SECRET_SOURCES_ENV):
            # Only the training processes see the values; nothing is printed or written.
            os.environ.update(load_secrets(os.environ[SECRET_SOURCES_ENV]))
        stage = os.environ.get(STAGE_ENV, "train")
        if stage not in STAGES:
            raise ContainerError(f"{STAGE_ENV}={stage!r}: this container runs {', '.join(STAGES)}")
        STAGES[stage](contract)
    except Exception as exc:  # noqa: BLE001 - every failure must reach SageMaker's FailureReason
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)  # the whole text, in the job's log
        base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        try:
            (base / "output").mkdir(parents=True, exist_ok=True)
            # Anyone who may describe the job reads FailureReason: our own words only, never a library's.
            (base / "output" / "failure").write_text(failure_reason(shown_message(exc)))
        except OSError:
            pass  # the exit status still fails the job
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
