"""train: DeepSpeed ZeRO pretraining on packed blocks; runs under torchrun, without Metaflow.

    python -m torch.distributed.run --nproc_per_node 2 -m steps.train \
        --config run.json --dataset DIR --tokenizer DIR --out DIR [--base-model DIR] \
        [--checkpoint-uri URI] [--resume-from URI ...]

Checkpoints go to `--checkpoint-uri` (a folder or s3:// prefix; default
`<out>/checkpoints`), see steps/checkpoint.py. Training continues from the newest
complete checkpoint there or, failing that, under any `--resume-from` root (the run
this one resumes). Writes `<out>/metrics.jsonl`, `<out>/verify_logits.pt` (the
trained model's logits on a fixed held-out batch, which convert must reproduce)
and `<out>/train_summary.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import deepspeed
import numpy as np
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from steps.checkpoint import CheckpointStore, check_weights
from steps.config import ConfigError, TuneConfig, load_config
from steps.deepspeed_config import build_deepspeed_config, offloads_optimizer
from steps.distributed import ON_GPU, DistContext, all_reduce_sum, init_distributed, shutdown
from steps.domain_tokenizer import load_tokenizer
from steps.launch import entrypoint_parser
from steps.model import check_vocabulary, initial_model, state_dict_sha256
from steps.packing import load_blocks
from steps.train_metrics import MetricsLog, Tracker, flops_per_token, memory_gib, peak_tflops

VERIFY_BLOCKS, VERIFY_TOKENS = 2, 64


class BlockOrder:
    """Which blocks each rank reads at each step: a fresh seeded shuffle per epoch.

    The order depends only on (seed, step), so a resumed run reads exactly the
    blocks an uninterrupted one would have read; after a resume on another world
    size it continues at the first block not yet read.
    """

    def __init__(self, num_blocks: int, seed: int, micro_batch: int, world_size: int, accumulation: int) -> None:
        self.num_blocks, self.seed = num_blocks, seed
        self.micro_batch, self.world_size, self.accumulation = micro_batch, world_size, accumulation
        self.global_batch = micro_batch * world_size * accumulation
        self._base_step, self._base_position = 0, 0
        self._epoch, self._perm = -1, np.arange(0)

    def resume_at(self, step: int, blocks_seen: int) -> None:
        """Continue the stream after `blocks_seen` blocks at `step` (a checkpoint from any world size)."""
        self._base_step, self._base_position = step, blocks_seen

    def position(self, step: int) -> int:
        """Blocks of the stream read before `step`."""
        return self._base_position + (step - self._base_step) * self.global_batch

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
        return self._perm

    def indices(self, step: int, micro: int, rank: int) -> list[int]:
        start = self.position(step) + (micro * self.world_size + rank) * self.micro_batch
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


def _optimizer(model: torch.nn.Module, config: TuneConfig, offloaded: bool) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # norms and biases
    groups = [{"params": decay, "weight_decay": config.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if offloaded:
        # ZeRO-Offload steps the optimizer on the CPU; DeepSpeed's vectorised Adam is the one it supports there.
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=config.train.learning_rate, betas=(0.9, 0.95), adamw_mode=True)
    return torch.optim.AdamW(groups, lr=config.train.learning_rate, betas=(0.9, 0.95))


def check_dtype(config: TuneConfig) -> None:
    """Refuse precisions the hardware cannot train in, before any work."""
    dtype = config.train.dtype
    if dtype == "fp16" and not ON_GPU:
        raise ConfigError("train.dtype: got 'fp16', which DeepSpeed does not train in on CPU; use fp32 or bf16")
    if dtype == "bf16" and ON_GPU and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.dtype: got 'bf16', which {torch.cuda.get_device_name()} lacks; use fp16 or fp32")


def default_staging(out: Path) -> Path:
    """A local folder for checkpoint copies, outside the run's storage, the same for every rank of a machine."""
    key = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"tune-checkpoint-staging-{key}"


@dataclass(frozen=True)
class CheckpointPlan:
    """Where checkpoints go, where this machine's ranks stage them, and which earlier runs to resume."""

    uri: str
    staging: Path
    resume_from: tuple[str, ...] = ()


def run_training(
    config: TuneConfig,
    dataset_dir: Path,
    tokenizer_dir: Path,
    out_dir: Path,
    base_model: Path | None,
    plan: CheckpointPlan,
) -> dict:
    check_dtype(config)
    ctx = init_distributed(config.train.failure_timeout_s)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = initial_model(config.model, base_model, tokenizer)
    check_vocabulary(model, tokenizer)
    init_sha = state_dict_sha256(model)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    parameters = sum(p.numel() for p in model.parameters())
    if config.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False

    train_blocks = load_blocks(dataset_dir / "train")
    order = BlockOrder(
        len(train_blocks),
        config.train.seed,
        config.train.micro_batch_size,
        ctx.world_size,
        config.train.gradient_accumulation_steps,
    )
    ds_config = build_deepspeed_config(config, ctx.world_size)
    store = CheckpointStore(plan.uri, plan.staging, config.train.keep_checkpoints, ctx)
    found = store.find(plan.resume_from)
    universal = found is not None and store.reshapes(found, config.deepspeed.zero_stage)
    if universal:
        # Another world size or stage: DeepSpeed reshards a universal checkpoint while loading it.
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
    optimizer = _optimizer(model, config, offloads_optimizer(ds_config))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)

    metrics_file = out_dir / "metrics.jsonl"
    start_step, tokens_seen = 0, 0
    if found is not None:
        store.load(engine, found, metrics_file, universal)
        start_step, tokens_seen = found.manifest["step"], found.manifest["tokens_seen"]
        # The data stream continues at the next unread block, whatever the batch per step is now.
        order.resume_at(start_step, found.manifest.get("blocks_seen", start_step * order.global_batch))
        if ctx.is_main:
            how = f" (resharded from {found.manifest['world_size']} ranks)" if universal else ""
            print(f"resuming from {found.uri} at step {start_step}{how}", flush=True)
    elif ctx.is_main:
        metrics_file.unlink(missing_ok=True)  # a fresh start: no records from an earlier attempt

    tracker = Tracker(config.train.tracker, out_dir, config.model_dump()) if ctx.is_main else None
    metrics = MetricsLog(metrics_file, ctx.is_main, config.train.max_steps, start_step, tracker)
    block_tokens = train_blocks.shape[1]
    tokens_per_step = (
        block_tokens * config.train.micro_batch_size * ctx.world_size * config.train.gradient_accumulation_steps
    )
    step_flops = tokens_per_step * flops_per_token(
        parameters, engine.module.config.num_hidden_layers, engine.module.config.hidden_size, block_tokens
    )
    peak = peak_tflops(config)
    state = {"init_sha256": init_sha, "zero_stage": config.deepspeed.zero_stage}

    def save(step: int) -> str:
        check_weights(engine, shapes, ctx.device)
        position = {"tokens_seen": tokens_seen, "blocks_seen": order.position(step)}
        return store.save(engine, step, {**state, **position}, metrics_file if ctx.is_main else None)

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
            seconds = (now - window_start) / steps_in_window
            grad_norm = engine.get_global_grad_norm()
            tflops = step_flops / seconds / ctx.world_size / 1e12  # per device, as peaks are quoted
            metrics.log(
                {
                    "step": done,
                    "loss": last_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                    "tokens_seen": tokens_seen,
                    "tokens_per_s": tokens_per_step / seconds,
                    "step_s": seconds,
                    "tflops": tflops,
                    "mfu": tflops / peak if peak else None,
                    **memory_gib(),
                    "time": time.time(),
                }
            )
            window_start = now
        if done % config.train.checkpoint_every == 0 and done != config.train.max_steps:
            save(done)
            window_start = time.perf_counter()  # saving is not training time

    final = save(config.train.max_steps)
    metrics.close()
    _save_verify_logits(engine, dataset_dir, out_dir, ctx)
    summary = {
        "final_checkpoint": final,
        "steps": config.train.max_steps,
        "resumed_from_step": start_step,
        "resumed_from": found.uri if found is not None else None,
        "final_loss": last_loss,
        "tokens_seen": tokens_seen,
        "world_size": ctx.world_size,
        "zero_stage": config.deepspeed.zero_stage,
        "parameters": parameters,
        "flops_per_token": step_flops / tokens_per_step,
        "peak_tflops": peak,
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
    parser = entrypoint_parser(__doc__, ["config", "dataset", "tokenizer", "out"])
    parser.add_argument("--checkpoint-uri", default=None, help="checkpoint root: a folder or s3:// prefix")
    parser.add_argument("--checkpoint-staging", type=Path, default=None, help="local folder for S3 checkpoints")
    parser.add_argument("--resume-from", action="append", default=[], help="an earlier run's checkpoint root")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    plan = CheckpointPlan(
        uri=args.checkpoint_uri or str(args.out / "checkpoints"),
        staging=args.checkpoint_staging or default_staging(args.out),
        resume_from=tuple(args.resume_from),
    )
    run_training(load_config(args.config), args.dataset, args.tokenizer, args.out, args.base_model, plan)


if __name__ == "__main__":
    main()
