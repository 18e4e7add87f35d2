"""The optimizer, the learning-rate schedule and the precision check: what `train.*` sets besides the data."""

from __future__ import annotations

import math

import torch
from deepspeed.ops.adam import DeepSpeedCPUAdam

from steps.config import ConfigError, TuneConfig
from steps.runtime.distributed import ON_GPU


def lr_lambda(config: TuneConfig):
    """Linear warmup, then cosine decay to the floor (train.min_learning_rate), as a factor of the peak (≤ 1)."""
    train = config.train
    floor = min(1.0, train.lr_floor / train.learning_rate)

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / (train.warmup_steps + 1)
        progress = (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups of the trainable parameters (all of them, or LoRA's adapters): matrices decayed, vectors not.

    Frozen parameters stay out: ZeRO then partitions, reduces and steps only what trains.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # A ZeRO-3 partitioned parameter is a flat slice; its real rank is that of `ds_shape`.
    matrix = {n: len(getattr(p, "ds_shape", p.shape)) >= 2 for n, p in named}
    decay = [p for n, p in named if matrix[n]]
    no_decay = [p for n, p in named if not matrix[n]]  # norms and biases
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # ZeRO drops an empty group (LoRA's adapters are all matrices), and a schedule built over it would not fit.
    return [group for group in groups if group["params"]]


def build_optimizer(model: torch.nn.Module, config: TuneConfig, offloaded: bool) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config.train.weight_decay)
    if offloaded:
        # ZeRO-Offload steps the optimizer on the CPU; DeepSpeed's vectorised Adam is the one it supports there.
        return DeepSpeedCPUAdam(groups, lr=config.train.learning_rate, betas=(0.9, 0.95), adamw_mode=True)
    # On CUDA, one fused kernel for the whole step instead of a chain of elementwise launches per tensor.
    return torch.optim.AdamW(groups, lr=config.train.learning_rate, betas=(0.9, 0.95), fused=True if ON_GPU else None)


def check_dtype(config: TuneConfig) -> None:
    """Refuse precisions the hardware cannot train in, before any work."""
    dtype = config.train.dtype
    if dtype == "fp16" and not ON_GPU:
        raise ConfigError("train.dtype: got 'fp16', which DeepSpeed does not train in on CPU; use fp32 or bf16")
    if dtype == "bf16" and ON_GPU and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.dtype: got 'bf16', which {torch.cuda.get_device_name()} lacks; use fp16 or fp32")
