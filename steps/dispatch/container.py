"""Our container's entrypoint under the SageMaker training contract: any stage's spec on each host of a job.

SageMaker runs `docker run <image> train` on each of its hosts; containers/entrypoint.sh
turns `train` into `python -m steps.dispatch.container`. This reads:

- `TUNE_STAGE`: the stage's spec (`steps.stages.SPECS`: train, convert, evaluate);
- channels from `/opt/ml/input/data/<channel>` (`SM_CHANNEL_<NAME>` when set): `config`
  (the resolved config.json and `inputs.json`, the references of the other channels), and one
  per input the spec names; each is checked against its reference's hash before the stage
  starts. A checkpointing stage also gets `resume` (the checkpoints of a run this one resumes);
- the hosts from `SM_HOSTS`/`SM_CURRENT_HOST` (else /opt/ml/input/config/resourceconfig.json),
  GPUs per host from `SM_NUM_GPUS` (else CUDA's count; the config's processes on CPU);
- Secrets Manager sources named in `TUNE_SECRET_SOURCES`, whose values become environment
  values of the stage's processes only.

It runs the stage's entry point with the same command line as a local run
(`steps.runtime.stage_spec.entry_args`): under torchrun across all hosts (the first host
is the rendezvous), or as one process on a one-host job. The first host's output goes to
/opt/ml/model: SageMaker uploads every host's /opt/ml/model into the one output prefix,
so only the first host writes there. A checkpointing stage keeps its checkpoints in
/opt/ml/checkpoints, which SageMaker syncs to S3 and restores into a restarted Spot job.
A failure is written to `/opt/ml/output/failure` (steps.runtime.error_text: only our own
messages), which SageMaker reports as the job's FailureReason, and the exit status is
non-zero. `SAGEMAKER_BASE_DIR` moves /opt/ml (as in the SageMaker training toolkit),
which is how the tests emulate a host without Docker.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import torch

from steps.config import TuneConfig, load_config
from steps.dispatch.sagemaker_job import INPUTS_FILE, SECRET_SOURCES_ENV, STAGE_ENV
from steps.runtime.error_text import shown_message
from steps.runtime.launch import Rendezvous, run_module, run_torchrun
from steps.runtime.stage_spec import CheckpointArgs, StageSpec, entry_args
from steps.runtime.storage import StorageError, StoredDir, open_storage
from steps.stages import SPECS

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


CONTAINER_CHECKPOINTS = "checkpoints"
"""Under /opt/ml: the folder SageMaker keeps in step with the job's checkpoint prefix."""


def checked_channel(contract: HostContract, name: str, ref: dict | None, trusted: bool) -> Path | None:
    """The channel of input `name`, its manifest checked against the reference the step sent (every file's hash
    too, unless the stage checks the files it reads itself); None for an input the stage was given none of."""
    if ref is None:
        return None
    path = contract.channel(name)
    expected = StoredDir.from_dict(ref)
    try:
        return open_storage(path).fetch(expected.sha256, verify=not trusted)
    except StorageError as exc:
        raise ContainerError(f"input channel {name!r} is not the folder the step sent, {expected.uri}: {exc}") from None


def run_host(contract: HostContract, spec: StageSpec) -> Path:
    """This host's share of the stage; the folder the first host wrote its output into (/opt/ml/model)."""
    config_channel = contract.channel("config")
    config: TuneConfig = load_config(config_channel / "config.json")
    contract.check_hosts(spec.hosts(config), spec.hosts_field)
    refs = json.loads((config_channel / INPUTS_FILE).read_text())
    trusted = spec.trusted_inputs
    inputs = {name: checked_channel(contract, name, refs.get(name), name in trusted) for name in spec.inputs}
    out = contract.model_output()
    checkpoints = None
    if spec.checkpoints:
        # /opt/ml/checkpoints: SageMaker uploads what appears there and restores it into a restarted Spot job.
        local = contract.base / CONTAINER_CHECKPOINTS
        local.mkdir(parents=True, exist_ok=True)
        earlier = contract.channel("resume", required=False)
        checkpoints = CheckpointArgs(str(local), resume_from=(str(earlier),) if earlier else ())
    args = entry_args(spec, config_channel / "config.json", inputs, out, checkpoints=checkpoints)
    if spec.launch == "torchrun":  # one process per GPU of the host (on CPU, the config's)
        nproc = contract.gpus or spec.processes(config)
        run_torchrun(spec.module, args, nproc, contract.rendezvous(), timeout_s=spec.failure_timeout_s(config))
    elif len(contract.hosts) == 1:
        run_module(spec.module, args)
    else:
        raise ContainerError(f"stage {spec.name} runs as one process: its job must have one host")
    if contract.node_rank == 0 and spec.summary is not None and not (out / spec.summary[1]).is_file():
        raise ContainerError(f"{spec.name} ended without writing {spec.summary[1]} on the first host")
    return out


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
        runnable = [name for name, spec in SPECS.items() if spec.on_sagemaker]
        if stage not in runnable:
            raise ContainerError(f"{STAGE_ENV}={stage!r}: this container runs {', '.join(runnable)}")
        run_host(contract, SPECS[stage])
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
