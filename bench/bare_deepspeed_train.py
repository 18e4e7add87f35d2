"""The baseline of bench/train_overhead.py: the least code that trains the same model with DeepSpeed.

    python -m torch.distributed.run --nproc_per_node 2 bench/bare_deepspeed_train.py \
        --config run.json --deepspeed ds.json --dataset DIR --tokenizer DIR --steps 40 --out records.jsonl

Same model (built from the same config), same DeepSpeed JSON, same packed blocks,
same optimizer; no data-order bookkeeping, checkpoints, metrics or progress output.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from datasets import load_from_disk

from steps.config import load_config
from steps.formats.model import build_model
from steps.formats.tokenizer_folder import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("config", "deepspeed", "dataset", "tokenizer", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--log-every", type=int, default=5)
    args = parser.parse_args()
    config = load_config(args.config)
    deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl")
    rank, world = dist.get_rank(), dist.get_world_size()

    blocks = np.asarray(load_from_disk(str(args.dataset / "train")).with_format("numpy")["input_ids"], dtype=np.int64)
    tokenizer = load_tokenizer(args.tokenizer)
    model = build_model(config.model, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.train.learning_rate,
        betas=(0.9, 0.95),
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=json.loads(args.deepspeed.read_text())
    )
    micro = config.train.micro_batch_size
    order = np.random.default_rng(config.train.seed).permutation(len(blocks))
    records = []
    for step in range(args.steps):
        start = (step * world + rank) * micro
        ids = torch.from_numpy(blocks[order[np.arange(start, start + micro) % len(blocks)]])
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        if (step + 1) % args.log_every == 0:
            loss.item()  # the same host sync our entrypoint does when it logs
            records.append({"step": step + 1, "time": time.time()})
    if rank == 0:
        args.out.write_text("\n".join(json.dumps(r) for r in records))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
