"""Launch a stage entrypoint (`python -m steps.<stage>`), under torchrun or alone, and make its outcome the caller's.

The output of every rank is streamed to our stdout (and so to the step's log) and,
if asked, to a log file; a non-zero exit becomes a `LaunchError` naming the first
failed rank, its exit code and the last log lines, never a silent success. The
entrypoints' shared command line (`cli_args`, `entrypoint_parser`) is here too.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class LaunchError(RuntimeError):
    """torchrun (or a rank under it) failed. The message has the ranks' last lines for the log; `public` says
    which rank failed and how without any rank's own words (see steps.runtime.error_text)."""

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public


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
    """The torchrun command for `module` (a dotted module name, or a script's path ending in .py)."""
    # A node that never joins fails the rendezvous after timeout_s instead of torchrun's 10 minutes.
    rdzv_conf = [f"--rdzv_conf=timeout={timeout_s}"] if timeout_s else []
    target = [module] if module.endswith(".py") else ["-m", module]
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
        *target,
        *args,
    ]


_FAILED_RANK = re.compile(
    r"rank\s*:\s*(?P<rank>\d+) \(local_rank: (?P<local>\d+)\)\s*\n\s*exitcode\s*:\s*(?P<code>-?\d+)"
    r".*?traceback\s*:\s*(?P<trace>[^\n]*)",
    re.S,
)


_ERROR_LINE = re.compile(
    r"^\s*(?P<type>(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit))(?::[^\n]*|[ \t]*)$", re.M
)


def _error_line(summary: str, cause: re.Match, failed: list[re.Match]) -> re.Match | None:
    """The line that ends the cause's traceback in the summary (`type: message`), if there is one."""
    after = [m.start() for m in failed if m.start() > cause.start()]
    found = list(_ERROR_LINE.finditer(summary[cause.start("trace") : min(after, default=len(summary))]))
    return found[-1] if found else None


def exit_text(code: int) -> str:
    """`code -9 (SIGKILL)`: a negative code is the signal that ended the process (SIGKILL: often the OOM killer)."""
    if code < 0 and -code in signal.valid_signals():
        return f"code {code} ({signal.Signals(-code).name})"
    return f"code {code}"


def root_cause(summary: str, public: bool = False) -> str | None:
    """Which rank died and how, in one line, from torchrun's failure summary; `public`: the rank's exception
    type in place of its message.

    torchrun names the failure it observed first, but when a rank is killed by a
    signal its peers often raise (connection reset) before torchrun polls, and
    one of them gets named. A rank killed by a signal (other than torchrun's own
    SIGTERM to the survivors) is the cause, so it wins.
    """
    summary = summary[summary.rfind("Failures:") :] if "Failures:" in summary else summary
    failed = list(_FAILED_RANK.finditer(summary))
    if not failed:
        return None
    root = summary.find("Root Cause (first observed failure)")
    first = next((m for m in failed if m.start() > root), failed[0]) if root >= 0 else failed[0]
    # SIGTERM is what torchrun sends the survivors once one rank has failed: a consequence, not a cause.
    killed = [m for m in failed if int(m["code"]) < 0 and int(m["code"]) != -signal.SIGTERM]
    cause = first if first in killed or not killed else killed[0]
    how = f"exit {exit_text(int(cause['code']))}"
    others = sorted({f"rank {m['rank']} (exit code {m['code']})" for m in failed if m["rank"] != cause["rank"]})
    also = f"; then {', '.join(others)}" if others else ""
    error = _error_line(summary, cause, failed)
    if public:  # the exception's type only: its message may quote the rank's input
        detail = error["type"] if error else ""
    else:
        detail = error[0].strip() if error else cause["trace"].strip()
    detail = f": {detail}" if detail else ""
    return f"rank {cause['rank']} (local rank {cause['local']}) failed first with {how}{detail}{also}"


def _child_env(processes: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | dict(extra or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Per-rank progress bars (weight loading, dataset maps) interleave into noise in the step log; DeepSpeed's
    # own are plain tqdm (zero_to_fp32's "Loading checkpoint shards": four bars in every convert log).
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    # One BLAS pool per rank sized to its share of the cores; oversubscribing CPU cores halves throughput.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    return env


@dataclass
class _Outcome:
    code: int
    tail: list[str]
    failure_summary: str


def _stream(
    command: list[str], processes: int, log_file: Path | None, tail_lines: int, env: Mapping[str, str] | None = None
) -> _Outcome:
    """Run a command with its output copied line by line to our stdout (and `log_file`)."""
    print("launching:", " ".join(command), flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    failure_summary: list[str] = []
    log = open(log_file, "a") if log_file else None
    try:
        child_env = _child_env(processes, env)
        with subprocess.Popen(
            command, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                sys.stdout.write(line)
                if log:
                    log.write(line)
                tail.append(line.rstrip())
                # torchrun's failure summary can be longer than the tail; keep it whole.
                if failure_summary or line.strip() == "Failures:":
                    failure_summary.append(line)
            code = process.wait()
    finally:
        sys.stdout.flush()
        if log:
            log.close()
    return _Outcome(code, list(tail), "".join(failure_summary))


def run_torchrun(
    module: str,
    args: Sequence[str],
    nproc_per_node: int,
    rdzv: Rendezvous | None = None,
    tail_lines: int = 40,
    timeout_s: int | None = None,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run `python -m torch.distributed.run ... -m module args`, streaming its output; `env`: added variables."""
    rdzv = rdzv or Rendezvous(main_port=free_port())
    command = torchrun_command(module, args, nproc_per_node, rdzv, timeout_s)
    outcome = _stream(command, nproc_per_node, log_file, tail_lines, env)
    if outcome.code != 0:
        last = "\n".join(outcome.tail)
        unknown = "no rank reported a failure (rendezvous or launcher error)"
        headline = f"{module} under torchrun on node {rdzv.node_rank} exited with code {outcome.code}; "
        raise LaunchError(
            f"{headline}{root_cause(outcome.failure_summary) or unknown}\nlast lines:\n{last}",
            public=headline + (root_cause(outcome.failure_summary, public=True) or unknown),
        )


def run_module(module: str, args: Sequence[str], tail_lines: int = 40, env: Mapping[str, str] | None = None) -> None:
    """Run `python -m module args` in a child process (a single-process stage), streaming its output."""
    outcome = _stream([sys.executable, "-m", module, *args], 1, None, tail_lines, env)
    if outcome.code != 0:
        last = "\n".join(outcome.tail)
        raise LaunchError(
            f"{module} exited with {exit_text(outcome.code)}\nlast lines:\n{last}",
            public=f"{module} exited with {exit_text(outcome.code)}",
        )
