"""LoRA training under DeepSpeed ZeRO: the wrapped model, and how its checkpoints go.

Wrap before `deepspeed.initialize` (`lora_for_training`) and give the optimizer the trainable parameters
only (`steps.train.optimization.parameter_groups`): ZeRO then partitions, all-reduces and steps the
adapters alone. Of a ZeRO checkpoint of the wrapped model, `param_shapes` and the optimizer partitions
hold the adapters alone; the frozen base weights are saved into `frozen_param_shapes` (ZeRO-3: every
rank's share in `frozen_param_fragments`) unless
`CHECKPOINT_SAVE` leaves them out. Left out, the checkpoint is the adapters and their optimizer state (a few
MB instead of the model), `steps.convert.zero_reader` reads it as any ZeRO checkpoint (it refuses frozen
parameters), and resuming needs the same base model wrapped alike, loaded with `CHECKPOINT_LOAD`
(`steps.train.checkpoints.CheckpointManager` does both for any model with frozen parameters).
"""

from __future__ import annotations

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from steps.config.instruct import InstructConfig
from steps.formats.adapter_folder import wrap_with_lora

CHECKPOINT_SAVE = {"exclude_frozen_parameters": True}
"""Keyword arguments of `engine.save_checkpoint` for a LoRA run: adapters and their optimizer state only."""
CHECKPOINT_LOAD = {"load_module_strict": False}
"""Keyword arguments of `engine.load_checkpoint` for a checkpoint saved with CHECKPOINT_SAVE: the base
weights are the model's own, not missing."""


def lora_for_training(model: PreTrainedModel, instruct: InstructConfig, seed: int) -> PeftModel:
    """`model` wrapped with adapters whose initialisation depends on `seed` alone (the same on every rank).

    Gradient checkpointing needs nothing more: transformers makes the frozen embedding's output require a
    gradient whenever checkpointing is switched on, before or after wrapping.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return wrap_with_lora(model, instruct)


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter counts (the full shape of ZeRO-3 partitioned ones)."""
    counts = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in model.parameters()]
    return sum(n for n, grad in counts if grad), sum(n for n, _ in counts)
