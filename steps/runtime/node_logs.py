"""Every node's torchrun output in the control node's log.

Metaflow keeps one log per @parallel task, so the output of nodes 1..N-1 would
only show in their own tasks. Each node stores its output as `node-<i>.log` in
the run's logs folder and, once its torchrun has exited, `node-<i>.exit` with the
exit code; node 0 waits (bounded) for the others and replays their logs.
"""

from __future__ import annotations

import time
from pathlib import Path

from steps.runtime.storage import Storage

RUNNING = "running"


def node_log_path(out: Path, node: int) -> Path:
    return out / "logs" / f"node-{node}.log"


def mark_node_running(logs: Storage, node: int) -> None:
    """Replace an earlier attempt's exit marker, so node 0 never takes it for this attempt's."""
    logs.put_text(f"node-{node}.exit", RUNNING)


def publish_node_log(out: Path, logs: Storage, node: int, exit_code: int) -> None:
    """Store this node's log (when not already in the run's storage) and its exit marker, last."""
    logs.put_file(node_log_path(out, node), f"node-{node}.log")
    logs.put_text(f"node-{node}.exit", str(exit_code))


def collect_node_logs(out: Path, logs: Storage, num_nodes: int, wait_s: float, poll_s: float = 1.0) -> dict[int, int]:
    """Print the logs of nodes 1..N-1 into ours; returns their exit codes (-1: no word within wait_s)."""
    deadline = time.monotonic() + wait_s
    codes: dict[int, int] = {}
    pending = set(range(1, num_nodes))
    while pending:
        for node in sorted(pending):
            marker = logs.get_text(f"node-{node}.exit")
            if marker is not None and marker != RUNNING:
                codes[node] = int(marker)
                pending.discard(node)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    for node in range(1, num_nodes):
        local = node_log_path(out, node)
        if node in codes:
            logs.get_file(f"node-{node}.log", local)
            text = local.read_text()
        else:
            codes[node] = -1
            text = f"(node {node} sent no log within {wait_s:.0f} s)\n"
        print(f"----- node {node} (exit code {codes[node]}) -----\n{text}----- end of node {node} -----", flush=True)
    return codes
