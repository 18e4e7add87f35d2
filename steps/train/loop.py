"""The one training loop of one rank: DeepSpeed ZeRO, checkpoints, metrics, the logits check.

Called by `python -m steps.train` (see `steps.train.__main__`) in every torchrun rank, for
continued pretraining on packed blocks or instruction tuning on conversations (full or LoRA):
what differs is the objective's (`steps.train.objective`): settings, data, the model's wrapping
and held-out scores. Writes the train folder's files (`steps.formats.train_folder`): metrics,
the summary, the trained model's logits on a fixed held-out batch (which convert must
reproduce), and checkpoints through `CheckpointManager`.
"""

from __future__ import annotations

import time
from pathlib import Path

import deepspeed
import torch
from transformers import PreTrainedModel

from steps.config import TuneConfig
from steps.formats.model import check_vocabulary, initial_model, parameter_shapes, state_dict_sha256
from steps.formats.partitioned_model import load_partitioned, streams_into_partitions
from steps.formats.tokenizer_folder import load_tokenizer
from steps.formats.train_folder import METRICS_FILE, TRAIN_SUMMARY_FILE, VERIFY_LOGITS_FILE
from steps.results import TrainSummary
from steps.runtime.distributed import DistContext, all_reduce_sum, init_distributed, shutdown
from steps.train.checkpoints import (
    CheckpointManager,
    CheckpointPlace,
    TrainingPosition,
    check_weights,
    seed_rng_states,
)
from steps.train.deepspeed_config import build_deepspeed_config, offloads_optimizer
from steps.train.metrics import MetricsLog, Tracker, flops_per_token, memory_gib, peak_tflops
from steps.train.objective import ObjectiveName, instruction_tuning, pretraining
from steps.train.optimization import build_optimizer, check_dtype, lr_lambda


def starting_model(
    config: TuneConfig, ds_config: dict, base_model: Path | None, tokenizer, partitions: bool = True
) -> tuple[PreTrainedModel, str]:
    """The model training starts from, and its fingerprint (`init_sha256`, which evaluate checks)."""
    if partitions and streams_into_partitions(ds_config, base_model):
        # ZeRO-3 would partition the model anyway: no rank builds a whole copy of it (see partitioned_model).
        return load_partitioned(base_model, ds_config)
    model = initial_model(config.model, base_model, tokenizer)
    return model, state_dict_sha256(model)


def run_training(
    config: TuneConfig,
    objective: ObjectiveName,
    data_dir: Path,
    tokenizer_dir: Path,
    out_dir: Path,
    base_model: Path | None,
    checkpoints: CheckpointPlace,
) -> TrainSummary:
    """Train for `objective` on `data_dir` (the dataset folder, or the instruction dataset folder for `sft`)."""
    check_dtype(config)
    ctx = init_distributed(config.train.failure_timeout_s)
    tokenizer = load_tokenizer(tokenizer_dir)
    if objective == "sft":
        task = instruction_tuning(config, data_dir, tokenizer, ctx.world_size)
    else:
        task = pretraining(config, data_dir, ctx.world_size)
    config, data = task.settings, task.data
    ds_config = build_deepspeed_config(config, ctx.world_size)
    model, init_sha = starting_model(config, ds_config, base_model, tokenizer, task.partitions_on_load)
    check_vocabulary(model, tokenizer)
    if config.train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model = task.prepare_model(model)
    shapes = parameter_shapes(model)
    parameters = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())
    trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)

    manager = CheckpointManager(checkpoints, config.train, ctx)
    found = manager.find()
    universal = found is not None and manager.reshapes(found, config.deepspeed.zero_stage)
    if universal:
        # Another world size or stage: DeepSpeed reshards a universal checkpoint while loading it.
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
    optimizer = build_optimizer(model, config, offloads_optimizer(ds_config))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    seed_rng_states(config.train.seed, ctx.rank)  # a checkpoint's states replace these when training resumes

    metrics_file = out_dir / METRICS_FILE
    start_step, tokens_seen = 0, 0
    if found is not None:
        position = manager.load(engine, found, metrics_file, universal, init_sha)
        start_step, tokens_seen = found.step, position.tokens_seen
        # The data stream continues at the next unread item, whatever the batch per step is now.
        data.resume_at(start_step, position.blocks_seen)
        if ctx.is_main:
            how = f" (resharded from {found.record.world_size} ranks)" if universal else ""
            print(f"resuming from {found.uri} at step {start_step}{how}", flush=True)
    elif ctx.is_main:
        metrics_file.unlink(missing_ok=True)  # a fresh start: no records from an earlier attempt

    tracker = Tracker(config.train.tracker, out_dir, config.model_dump()) if ctx.is_main else None
    metrics = MetricsLog(metrics_file, ctx.is_main, config.train.max_steps, start_step, tracker)
    layers, width = engine.module.config.num_hidden_layers, engine.module.config.hidden_size
    per_token = flops_per_token(parameters, layers, width, data.sequence_length)
    peak = peak_tflops(config)

    def save(step: int) -> str:
        check_weights(engine, shapes, ctx.device)
        position = TrainingPosition(tokens_seen=tokens_seen, blocks_seen=data.position(step))
        return manager.save(engine, step, init_sha, position, metrics_file if ctx.is_main else None)

    engine.train()
    window_start, window_tokens, logged_at, last_loss = time.perf_counter(), 0, start_step, float("nan")
    for step in range(start_step, config.train.max_steps):
        # Summed on the device: reading a loss (`.item()`) waits for the GPU, so only logged steps do it.
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for micro in range(config.train.gradient_accumulation_steps):
            loss = engine(**data.model_inputs(step, micro, ctx.rank, ctx.device)).loss
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach()
        step_tokens = data.step_tokens(step)
        tokens_seen += step_tokens
        window_tokens += step_tokens
        done = step + 1
        scoring = task.scoring_due(done)
        if scoring or done % config.train.log_every == 0 or done == config.train.max_steps:
            (total,) = all_reduce_sum([loss_sum.item() / config.train.gradient_accumulation_steps], ctx.device)
            last_loss = total / ctx.world_size
            seconds = time.perf_counter() - window_start
            step_s = seconds / (done - logged_at)
            grad_norm = engine.get_global_grad_norm()
            tflops = window_tokens * per_token / seconds / ctx.world_size / 1e12  # per device, as peaks are quoted
            record = {
                "step": done,
                "loss": last_loss,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "tokens_seen": tokens_seen,
                "tokens_per_s": window_tokens / seconds,
                "step_s": step_s,
                "tflops": tflops,
                "mfu": tflops / peak if peak else None,
                **memory_gib(),
                "time": time.time(),
            }
            if scoring:  # after the window's clock stopped: scoring is not training time
                record |= task.scorer.score(engine, ctx)
            metrics.log(record)
            window_start, window_tokens, logged_at = time.perf_counter(), 0, done
        if manager.should_save(done) and done != config.train.max_steps:
            save(done)
            window_start = time.perf_counter()  # saving is not training time

    final = save(config.train.max_steps)
    metrics.close()
    _save_verify_logits(engine, data.verify_ids(), out_dir, ctx)
    summary = TrainSummary(
        objective=task.name,
        method=task.method,
        final_checkpoint=final,
        steps=config.train.max_steps,
        resumed_from_step=start_step,
        resumed_from=found.uri if found is not None else None,
        final_loss=last_loss,
        tokens_seen=tokens_seen,
        world_size=ctx.world_size,
        zero_stage=config.deepspeed.zero_stage,
        parameters=parameters,
        trainable_parameters=trainable,
        flops_per_token=per_token,
        peak_tflops=peak,
        init_sha256=init_sha,
        elapsed_s=time.perf_counter() - metrics.started,
    )
    if ctx.is_main:
        (out_dir / TRAIN_SUMMARY_FILE).write_text(summary.model_dump_json(indent=1))
    manager.close()
    shutdown()
    return summary


def _save_verify_logits(engine, ids: torch.Tensor, out_dir: Path, ctx: DistContext) -> None:
    """Logits of the trained engine on a fixed held-out batch; every rank joins (ZeRO-3 gathers)."""
    ids = ids.to(ctx.device)
    engine.eval()
    with torch.no_grad():
        logits = engine(input_ids=ids).logits.float().cpu()
    if ctx.is_main:
        torch.save({"input_ids": ids.cpu(), "logits": logits}, out_dir / VERIFY_LOGITS_FILE)
