"""Launch a `steps.*` entrypoint under torchrun and make its outcome the caller's.

The output of every rank is streamed to our stdout (and so to the step's log);
a non-zero exit of torchrun becomes a `LaunchError` carrying the exit code and
the last log lines, never a silent success.
"""

from __future__ import annotations

import collections
import os
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


def torchrun_command(module: str, args: Sequence[str], nproc_per_node: int, rdzv: Rendezvous) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={rdzv.num_nodes}",
        f"--node_rank={rdzv.node_rank}",
        f"--nproc_per_node={nproc_per_node}",
        f"--master_addr={rdzv.main_addr}",
        f"--master_port={rdzv.main_port}",
        "-m",
        module,
        *args,
    ]


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
    module: str, args: Sequence[str], nproc_per_node: int, rdzv: Rendezvous | None = None, tail_lines: int = 40
) -> None:
    """Run `python -m torch.distributed.run ... -m module args`, streaming its output."""
    command = torchrun_command(module, args, nproc_per_node, rdzv or Rendezvous(main_port=free_port()))
    print("launching:", " ".join(command), flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
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
        for line in process.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip())
        code = process.wait()
    sys.stdout.flush()
    if code != 0:
        last = "\n".join(tail)
        raise LaunchError(f"{module} under torchrun exited with code {code}; last lines:\n{last}")
