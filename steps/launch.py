"""Launch a `steps.*` entrypoint under torchrun and make its outcome the caller's.

The output of every rank is streamed to our stdout (and so to the step's log) and,
if asked, to a log file; a non-zero exit of torchrun becomes a `LaunchError` naming
the first failed rank, its exit code and the last log lines, never a silent success.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import sys
from argparse import ArgumentParser
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from steps.config import REPO_ROOT


class LaunchError(RuntimeError):
    """torchrun (or a rank under it) failed."""


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of one torchrun job meet, and which node this is."""

    num_nodes: int = 1
    node_rank: int = 0
    main_addr: str = "127.0.0.1"
    main_port: int = 29500


def cli_args(**paths: Path | str | None) -> list[str]:
    """`--some-name value` pairs for an entrypoint, from `some_name=value`; None values are left out."""
    args: list[str] = []
    for name, value in paths.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def entrypoint_parser(doc: str, required: Sequence[str], optional: Sequence[str] = ("base-model",)) -> ArgumentParser:
    """The command line of a torchrun entrypoint: path options, the first paragraph of its docstring as help."""
    parser = ArgumentParser(description=doc.split("\n\n")[0])
    for name in required:
        parser.add_argument(f"--{name}", required=True, type=Path)
    for name in optional:
        parser.add_argument(f"--{name}", type=Path, default=None)
    return parser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(
    module: str, args: Sequence[str], nproc_per_node: int, rdzv: Rendezvous, timeout_s: int | None = None
) -> list[str]:
    # A node that never joins fails the rendezvous after timeout_s instead of torchrun's 10 minutes.
    rdzv_conf = [f"--rdzv_conf=timeout={timeout_s}"] if timeout_s else []
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={rdzv.num_nodes}",
        f"--node_rank={rdzv.node_rank}",
        f"--nproc_per_node={nproc_per_node}",
        f"--master_addr={rdzv.main_addr}",
        f"--master_port={rdzv.main_port}",
        *rdzv_conf,
        "-m",
        module,
        *args,
    ]


_ROOT_CAUSE = re.compile(
    r"Root Cause \(first observed failure\):.*?rank\s*:\s*(?P<rank>\d+) \(local_rank: (?P<local>\d+)\)"
    r".*?exitcode\s*:\s*(?P<code>-?\d+).*?traceback\s*:\s*(?P<trace>[^\n]*)",
    re.S,
)


def root_cause(log: str) -> str | None:
    """torchrun's first observed failure, in one line: which rank died, how."""
    matches = list(_ROOT_CAUSE.finditer(log))
    if not matches:
        return None
    match = matches[-1]  # the last summary printed is the one of the failed attempt
    code = int(match["code"])
    how = f"exit code {code}"
    if code < 0:
        how += f" ({signal.Signals(-code).name})" if -code in signal.valid_signals() else ""
    return f"rank {match['rank']} (local rank {match['local']}) failed first with {how}: {match['trace'].strip()}"


def _child_env(nproc_per_node: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Per-rank progress bars (weight loading, dataset maps) interleave into noise in the step log.
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    # One BLAS pool per rank sized to its share of the cores; oversubscribing CPU cores halves throughput.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    return env


def run_torchrun(
    module: str,
    args: Sequence[str],
    nproc_per_node: int,
    rdzv: Rendezvous | None = None,
    tail_lines: int = 40,
    timeout_s: int | None = None,
    log_file: Path | None = None,
) -> None:
    """Run `python -m torch.distributed.run ... -m module args`, streaming its output."""
    rdzv = rdzv or Rendezvous(main_port=free_port())
    command = torchrun_command(module, args, nproc_per_node, rdzv, timeout_s)
    print("launching:", " ".join(command), flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    log = open(log_file, "a") if log_file else None
    with subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=_child_env(nproc_per_node),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        failure_summary: list[str] = []
        for line in process.stdout:
            sys.stdout.write(line)
            if log:
                log.write(line)
            tail.append(line.rstrip())
            # torchrun's failure summary can be longer than the tail; keep it whole.
            if failure_summary or "Root Cause (first observed failure)" in line:
                failure_summary.append(line)
        code = process.wait()
    sys.stdout.flush()
    if log:
        log.close()
    if code != 0:
        last = "\n".join(tail)
        cause = root_cause("".join(failure_summary)) or "no rank reported a failure (rendezvous or launcher error)"
        raise LaunchError(
            f"{module} under torchrun on node {rdzv.node_rank} exited with code {code}; {cause}\nlast lines:\n{last}"
        )
