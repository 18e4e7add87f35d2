"""train: DeepSpeed ZeRO pretraining on packed blocks; runs under torchrun, without Metaflow.

    python -m torch.distributed.run --nproc_per_node 2 -m steps.train \
        --config run.json --dataset DIR --tokenizer DIR --out DIR [--base-model DIR]

Writes `<out>/checkpoints/step-*/` (DeepSpeed shards, model config, manifest),
`<out>/metrics.jsonl`, `<out>/verify_logits.pt` (the trained model's logits on a
fixed held-out batch, which convert must reproduce) and `<out>/train_summary.json`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import deepspeed
import numpy as np
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from steps.checkpoint import newest_checkpoint, save_checkpoint
from steps.config import TuneConfig, load_config
from steps.deepspeed_config import build_deepspeed_config
from steps.distributed import DistContext, all_reduce_sum, init_distributed, shutdown
from steps.domain_tokenizer import load_tokenizer
from steps.launch import entrypoint_parser
from steps.model import check_vocabulary, initial_model, state_dict_sha256
from steps.packing import load_blocks

VERIFY_BLOCKS, VERIFY_TOKENS = 2, 64


class BlockOrder:
    """Which blocks each rank reads at each step: a fresh seeded shuffle per epoch.

    The order depends only on (seed, step), so a resumed run reads exactly the
    blocks an uninterrupted one would have read.
    """

    def __init__(self, num_blocks: int, seed: int, micro_batch: int, world_size: int, accumulation: int) -> None:
        self.num_blocks, self.seed = num_blocks, seed
        self.micro_batch, self.world_size, self.accumulation = micro_batch, world_size, accumulation
        self._epoch, self._perm = -1, np.arange(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
        return self._perm

    def indices(self, step: int, micro: int, rank: int) -> list[int]:
        global_batch = self.micro_batch * self.world_size * self.accumulation
        start = step * global_batch + (micro * self.world_size + rank) * self.micro_batch
        out = []
        for position in range(start, start + self.micro_batch):
            epoch, offset = divmod(position, self.num_blocks)
            out.append(int(self._permutation(epoch)[offset]))
        return out


def lr_lambda(config: TuneConfig):
    """Linear warmup, then cosine decay to min_learning_rate, as a factor of the peak."""
    train = config.train
    floor = train.min_learning_rate / train.learning_rate

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / (train.warmup_steps + 1)
        progress = (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _optimizer(model: torch.nn.Module, config: TuneConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # norms and biases
    groups = [{"params": decay, "weight_decay": config.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.train.learning_rate, betas=(0.9, 0.95))


class MetricsLog:
    """Rank 0's JSONL metrics and console progress with ETA."""

    def __init__(self, path: Path, ctx: DistContext, total_steps: int) -> None:
        self.ctx, self.total = ctx, total_steps
        self.handle = open(path, "a") if ctx.is_main else None
        self.started = time.perf_counter()

    def log(self, record: dict, steps_done_here: int) -> None:
        if self.handle is None:
            return
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        elapsed = time.perf_counter() - self.started
        eta = elapsed / max(1, steps_done_here) * (self.total - record["step"])
        print(
            f"step {record['step']:>6}/{self.total}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"grad_norm {record['grad_norm']:.3f}  {record['tokens_per_s']:.0f} tok/s  eta {eta:.0f}s",
            flush=True,
        )


def run_training(
    config: TuneConfig, dataset_dir: Path, tokenizer_dir: Path, out_dir: Path, base_model: Path | None
) -> dict:
    ctx = init_distributed()
    tokenizer = load_tokenizer(tokenizer_dir)
    model = initial_model(config.model, base_model, tokenizer)
    check_vocabulary(model, tokenizer)
    init_sha = state_dict_sha256(model)

    train_blocks = load_blocks(dataset_dir / "train")
    order = BlockOrder(
        len(train_blocks),
        config.train.seed,
        config.train.micro_batch_size,
        ctx.world_size,
        config.train.gradient_accumulation_steps,
    )
    optimizer = _optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=build_deepspeed_config(config, ctx.world_size),
    )

    ckpt_root = out_dir / "checkpoints"
    start_step, tokens_seen = 0, 0
    found = newest_checkpoint(ckpt_root)
    if found is not None:
        folder, manifest = found
        engine.load_checkpoint(str(ckpt_root), tag=manifest["tag"])
        start_step, tokens_seen = manifest["step"], manifest["tokens_seen"]
        if ctx.is_main:
            print(f"resuming from {folder} at step {start_step}", flush=True)

    metrics = MetricsLog(out_dir / "metrics.jsonl", ctx, config.train.max_steps)
    block_tokens = train_blocks.shape[1]
    tokens_per_step = (
        block_tokens * config.train.micro_batch_size * ctx.world_size * config.train.gradient_accumulation_steps
    )
    engine.train()
    window_start, last_loss = time.perf_counter(), float("nan")
    for step in range(start_step, config.train.max_steps):
        loss_sum = 0.0
        for micro in range(config.train.gradient_accumulation_steps):
            ids = torch.from_numpy(np.asarray(train_blocks[order.indices(step, micro, ctx.rank)], dtype=np.int64))
            ids = ids.to(ctx.device)
            loss = engine(input_ids=ids, labels=ids).loss
            engine.backward(loss)
            engine.step()
            loss_sum += loss.item()
        tokens_seen += tokens_per_step
        done = step + 1
        if done % config.train.log_every == 0 or done == config.train.max_steps:
            (total,) = all_reduce_sum([loss_sum / config.train.gradient_accumulation_steps], ctx.device)
            last_loss = total / ctx.world_size
            now = time.perf_counter()
            steps_in_window = done - max(start_step, done - config.train.log_every)
            grad_norm = engine.get_global_grad_norm()
            metrics.log(
                {
                    "step": done,
                    "loss": last_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                    "tokens_seen": tokens_seen,
                    "tokens_per_s": tokens_per_step * steps_in_window / (now - window_start),
                    "time": time.time(),
                },
                done - start_step,
            )
            window_start = now
        if done % config.train.checkpoint_every == 0 and done != config.train.max_steps:
            save_checkpoint(engine, ckpt_root, done, {"tokens_seen": tokens_seen, "init_sha256": init_sha}, ctx)

    final = save_checkpoint(
        engine, ckpt_root, config.train.max_steps, {"tokens_seen": tokens_seen, "init_sha256": init_sha}, ctx
    )
    _save_verify_logits(engine, dataset_dir, out_dir, ctx)
    summary = {
        "final_checkpoint": final.name,
        "steps": config.train.max_steps,
        "resumed_from_step": start_step,
        "final_loss": last_loss,
        "tokens_seen": tokens_seen,
        "world_size": ctx.world_size,
        "zero_stage": config.deepspeed.zero_stage,
        "parameters": sum(p.numel() for p in model.parameters())
        if config.deepspeed.zero_stage < 3
        else sum(p.ds_numel for p in model.parameters()),
        "init_sha256": init_sha,
        "elapsed_s": time.perf_counter() - metrics.started,
    }
    if ctx.is_main:
        (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    shutdown()
    return summary


def _save_verify_logits(engine, dataset_dir: Path, out_dir: Path, ctx: DistContext) -> None:
    """Logits of the trained engine on a fixed held-out batch; every rank joins (ZeRO-3 gathers)."""
    validation = load_blocks(dataset_dir / "validation")
    ids = torch.from_numpy(np.asarray(validation[:VERIFY_BLOCKS, :VERIFY_TOKENS], dtype=np.int64)).to(ctx.device)
    engine.eval()
    with torch.no_grad():
        logits = engine(input_ids=ids).logits.float().cpu()
    if ctx.is_main:
        torch.save({"input_ids": ids.cpu(), "logits": logits}, out_dir / "verify_logits.pt")


# @record makes torchrun's failure summary carry this rank's exception, not only its exit code.
@record
def main(argv: list[str] | None = None) -> None:
    args = entrypoint_parser(__doc__, ["config", "dataset", "tokenizer", "out"]).parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run_training(load_config(args.config), args.dataset, args.tokenizer, args.out, args.base_model)


if __name__ == "__main__":
    main()
