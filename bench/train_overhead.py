"""Benchmark: our training entrypoint against a bare DeepSpeed script, same model, config and data.

    python bench/train_overhead.py [--config configs/default.yaml] [--steps 40] [--repeats 2]

Both run under torchrun with the config's processes per node on this machine
(CPU/gloo here; a GPU machine uses NCCL). Throughput is measured over the
training loop from the first logged step to the last (startup, the first
window's warm-up and the final save excluded, the same for both). Runs alternate
ours/bare so that each pair sees the same machine load; the headline ratio is the
median of the pairs' ratios (best-of-each is printed too). Ends with one JSON line.
Target: ours >= 0.95 x bare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from steps.config import load_config, write_config
from steps.prepare.pipeline import run_prepare
from steps.project_files import DEFAULT_CONFIG
from steps.runtime.launch import run_torchrun
from steps.train.deepspeed_config import build_deepspeed_config

BARE = Path(__file__).resolve().parent / "bare_deepspeed_train.py"


def loop_tokens_per_s(records: list[dict], tokens_per_step: int) -> float:
    """Tokens/s between the first and the last logged step (the first window holds the warm-up)."""
    first, last = records[0], records[-1]
    return (last["step"] - first["step"]) * tokens_per_step / (last["time"] - first["time"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    # No intermediate checkpoints: the baseline has none, and saving is not training throughput.
    config = load_config(args.config).with_overrides(
        **{"train.max_steps": args.steps, "train.log_every": args.log_every, "train.checkpoint_every": args.steps}
    )
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    run_prepare(config.data, work / "prepared")
    dataset, tokenizer = work / "prepared" / "dataset", work / "prepared" / "tokenizer"
    nproc = config.train.nproc_per_node
    tokens_per_step = config.data.block_size * config.train.micro_batch_size * nproc
    config_file = write_config(config, work / "config.json")
    ds_file = work / "deepspeed.json"
    ds_file.write_text(json.dumps(build_deepspeed_config(config, nproc)))

    ours, bare = [], []
    for repeat in range(args.repeats):
        out = work / f"ours-{repeat}"
        paths = ["--config", config_file, "--dataset", dataset, "--tokenizer", tokenizer, "--out", out]
        run_torchrun("steps.train", [str(p) for p in paths], nproc)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        ours.append(loop_tokens_per_s(records, tokens_per_step))

        records_file = work / f"bare-{repeat}.jsonl"
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        command += [str(BARE), "--config", str(config_file)]
        command += ["--deepspeed", str(ds_file), "--dataset", str(dataset), "--tokenizer", str(tokenizer)]
        command += ["--steps", str(args.steps), "--log-every", str(args.log_every), "--out", str(records_file)]
        started = time.perf_counter()
        # The same thread budget our launcher gives each rank: the comparison is of code, not of BLAS pools.
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
        subprocess.run(command, check=True, env=env)
        print(f"bare run {repeat}: {time.perf_counter() - started:.1f} s wall", flush=True)
        records = [json.loads(line) for line in records_file.read_text().splitlines()]
        bare.append(loop_tokens_per_s(records, tokens_per_step))
        print(f"repeat {repeat}: ours {ours[-1]:.0f} tok/s, bare {bare[-1]:.0f} tok/s", flush=True)

    best_ours, best_bare = max(ours), max(bare)
    pair_ratios = sorted(o / b for o, b in zip(ours, bare, strict=True))
    result = {
        "benchmark": "train_overhead",
        "config": str(args.config),
        "steps": args.steps,
        "processes": nproc,
        "zero_stage": config.deepspeed.zero_stage,
        "tokens_per_step": tokens_per_step,
        "ours_tokens_per_s": round(best_ours, 1),
        "bare_tokens_per_s": round(best_bare, 1),
        "ours_runs": [round(x, 1) for x in ours],
        "bare_runs": [round(x, 1) for x in bare],
        "pair_ratios": [round(r, 3) for r in pair_ratios],
        "ratio_ours_to_bare": round(statistics.median(pair_ratios), 3),
        "ratio_best_ours_to_best_bare": round(best_ours / best_bare, 3),
        "target": 0.95,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
