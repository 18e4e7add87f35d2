"""Benchmark: what the live cards' refreshes cost training, through the flow on this machine.

    python bench/live_card_cost.py [--steps 300]

Runs the flow (configs/default.yaml, `--steps` training steps, a small evaluate) once per refresh interval
of the live cards, each in a fresh Metaflow folder: every 5 s (before), every `LIVE_CARD_EVERY_S` (the flow's
setting) and never while training runs (the baseline; the card is still rendered at the end). The interval is
the only difference: the flow file is copied with `LIVE_CARD_EVERY_S` replaced. Each refresh is a Metaflow
process that renders the card; on a machine whose cores the ranks fill, it takes them from training.
Throughput is the training loop's, from the first logged step to the last (the first window holds the
warm-up). Ends with one JSON line. Target: the flow's setting costs training at most 5% of the baseline's
throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from flows import tune_flow
from steps.project_files import DEFAULT_CONFIG

FLOW = Path(tune_flow.__file__)
NEVER = 10**9


def loop_tokens_per_s(records: list[dict]) -> float:
    first, last = records[0], records[-1]
    return (last["tokens_seen"] - first["tokens_seen"]) / (last["time"] - first["time"])


def run_flow(every_s: float, steps: int, root: Path) -> dict:
    """One flow run with the live cards refreshed every `every_s`; its training loop's throughput."""
    root.mkdir()
    flow = root / FLOW.name
    source = FLOW.read_text()
    flow.write_text(re.sub(r"(?m)^LIVE_CARD_EVERY_S = .*$", f"LIVE_CARD_EVERY_S = {every_s}", source, count=1))
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["train"]["max_steps"] = steps
    config["evaluate"].update({"engines": ["hf"], "probes": 8, "perplexity_blocks": 8})
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    # Metaflow would otherwise use the first `.metaflow` folder above the working one.
    env = {**os.environ, "USERNAME": "bench", "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(root)}
    command = [sys.executable, str(flow), "--config", "config", str(root / "config.yaml"), "run"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the flow failed with every_s={every_s}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    (metrics,) = root.glob(".metaflow/TuneFlow/*/files/train/metrics.jsonl")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return {"tokens_per_s": round(loop_tokens_per_s(records[1:]), 1), "logged_steps": len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    args = parser.parse_args()
    ours = tune_flow.LIVE_CARD_EVERY_S
    with tempfile.TemporaryDirectory(prefix="bench-live-card-") as scratch:
        runs = {
            name: run_flow(every_s, args.steps, Path(scratch) / name)
            for name, every_s in (("never", NEVER), ("every_5s", 5), (f"every_{ours}s", ours))
        }
    baseline = runs["never"]["tokens_per_s"]
    print(
        json.dumps(
            {
                "bench": "live_card_cost",
                "cores": os.cpu_count(),
                "steps": args.steps,
                "loop_tokens_per_s": {name: run["tokens_per_s"] for name, run in runs.items()},
                "throughput_lost": {
                    name: round(1 - run["tokens_per_s"] / baseline, 3) for name, run in runs.items() if name != "never"
                },
                "target": {f"every_{ours}s": 0.05},
            }
        )
    )


if __name__ == "__main__":
    main()
