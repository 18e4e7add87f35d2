"""What the nodes of one multi-node stage exchange through the run's storage: the rendezvous port and their logs.

Metaflow keeps one log per @parallel task, so the output of nodes 1..N-1 would
only show in their own tasks. Each node stores its output as `node-<i>.log` in
the stage's logs folder and, once its torchrun has exited, `node-<i>.exit` with the
exit code; node 0 waits (bounded) for the others and replays their logs.

Node 0 also picks the rendezvous port on its own machine and stores it for the
others (`agreed_port`), per attempt of the step: no other step has to choose it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from steps.runtime.launch import LaunchError, Rendezvous, free_port
from steps.runtime.storage import Storage

RUNNING = "running"


def agreed_port(logs: Storage, node: Rendezvous, attempt: int, wait_s: float, poll_s: float = 0.5) -> int:
    """The port node 0 listens on for this attempt: picked by node 0, read by the others (within `wait_s`)."""
    name = f"rendezvous-{attempt}.json"
    if node.node_rank == 0:
        port = free_port()
        logs.put_text(name, json.dumps({"port": port}))
        return port
    deadline = time.monotonic() + wait_s
    while (text := logs.get_text(name)) is None:
        if time.monotonic() > deadline:
            raise LaunchError(f"node {node.node_rank}: node 0 named no rendezvous port within {wait_s:.0f} s")
        time.sleep(poll_s)
    return int(json.loads(text)["port"])


def mark_node_running(logs: Storage, node: int) -> None:
    """Replace an earlier attempt's exit marker, so node 0 never takes it for this attempt's."""
    logs.put_text(f"node-{node}.exit", RUNNING)


def publish_node_log(log_file: Path, logs: Storage, node: int, exit_code: int) -> None:
    """Store this node's log (when not already in the run's storage) and its exit marker, last."""
    logs.put_file(log_file, f"node-{node}.log")
    logs.put_text(f"node-{node}.exit", str(exit_code))


def collect_node_logs(
    log_dir: Path, logs: Storage, num_nodes: int, wait_s: float, poll_s: float = 1.0
) -> dict[int, int]:
    """Print the logs of nodes 1..N-1 into ours (and into `log_dir`); their exit codes (-1: no word within wait_s)."""
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
        local = log_dir / f"node-{node}.log"
        if node in codes:
            logs.get_file(f"node-{node}.log", local)
            text = local.read_text()
        else:
            codes[node] = -1
            text = f"(node {node} sent no log within {wait_s:.0f} s)\n"
        print(f"----- node {node} (exit code {codes[node]}) -----\n{text}----- end of node {node} -----", flush=True)
    return codes
