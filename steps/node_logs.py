"""Every node's torchrun output in the control node's log.

Metaflow keeps one log per @parallel task, so the output of nodes 1..N-1 would
only show in their own tasks. Each node writes its output to `logs/node-<i>.log`
under the run's storage and, once its torchrun has exited, `logs/node-<i>.exit`
with the exit code; node 0 waits (bounded) for the others and replays their logs.
"""

from __future__ import annotations

import time
from pathlib import Path

from steps.storage import get_file, put_file, put_text, read_text


def node_log_path(out: Path, node: int) -> Path:
    return out / "logs" / f"node-{node}.log"


def mark_node_running(logs_uri: str, node: int) -> None:
    """Replace an earlier attempt's exit marker, so node 0 never takes it for this attempt's."""
    put_text(f"{logs_uri}/node-{node}.exit", "running")


def publish_node_log(out: Path, logs_uri: str, node: int, exit_code: int) -> None:
    """Put this node's log (when not already in shared storage) and its exit marker, last."""
    put_file(node_log_path(out, node), f"{logs_uri}/node-{node}.log")
    put_text(f"{logs_uri}/node-{node}.exit", str(exit_code))


def collect_node_logs(out: Path, logs_uri: str, num_nodes: int, wait_s: float, poll_s: float = 1.0) -> dict[int, int]:
    """Print the logs of nodes 1..N-1 into ours; returns their exit codes (-1: no word within wait_s)."""
    deadline = time.monotonic() + wait_s
    codes: dict[int, int] = {}
    pending = set(range(1, num_nodes))
    while pending:
        for node in sorted(pending):
            marker = read_text(f"{logs_uri}/node-{node}.exit")
            if marker is not None and marker != "running":
                codes[node] = int(marker)
                pending.discard(node)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    for node in range(1, num_nodes):
        local = node_log_path(out, node)
        if node in codes:
            get_file(f"{logs_uri}/node-{node}.log", local)
            text = local.read_text()
        else:
            codes[node] = -1
            text = f"(node {node} sent no log within {wait_s:.0f} s)\n"
        print(f"----- node {node} (exit code {codes[node]}) -----\n{text}----- end of node {node} -----", flush=True)
    return codes
