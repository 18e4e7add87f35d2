"""The DeepSpeed JSON a run trains with: the user's file plus the values our config owns.

Our config owns batch sizes, precision, clipping, the ZeRO stage and (when set)
offload devices. A file may
repeat them with the same value; a different value is a conflict, reported with
both values instead of one of them silently winning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from steps.config import ConfigError, TuneConfig
from steps.project_files import REPO_ROOT

# The optimizer and schedule come from train.* so that resume and evaluation know them.
_NOT_FROM_FILE = ("optimizer", "scheduler")


def _read(path_text: str) -> tuple[Path, dict[str, Any]]:
    path = Path(path_text)
    if not path.is_absolute():
        path = REPO_ROOT / path
    try:
        return path, json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"deepspeed.config_file = {path_text!r}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"deepspeed.config_file = {path_text!r}: not valid JSON ({exc})") from None


def _owned_values(config: TuneConfig, world_size: int) -> dict[tuple[str, ...], Any]:
    train, ds = config.train, config.deepspeed
    offload = {}
    for section, device in (("offload_optimizer", ds.offload_optimizer), ("offload_param", ds.offload_param)):
        if device is not None:  # unset: whatever the JSON says
            offload[("zero_optimization", section, "device")] = device
            if device == "nvme":
                offload[("zero_optimization", section, "nvme_path")] = ds.nvme_path
    return {
        **offload,
        ("train_micro_batch_size_per_gpu",): train.micro_batch_size,
        ("gradient_accumulation_steps",): train.gradient_accumulation_steps,
        ("train_batch_size",): train.micro_batch_size * train.gradient_accumulation_steps * world_size,
        ("gradient_clipping",): train.gradient_clipping,
        ("zero_optimization", "stage"): config.deepspeed.zero_stage,
        ("bf16", "enabled"): train.dtype == "bf16",
        ("fp16", "enabled"): train.dtype == "fp16",
    }


def build_deepspeed_config(config: TuneConfig, world_size: int) -> dict[str, Any]:
    """The merged DeepSpeed config; raises ConfigError naming the file and key on a conflict."""
    source = config.deepspeed.config_file
    path, merged = _read(source) if source else (None, {})
    for key in _NOT_FROM_FILE:
        if key in merged:
            raise ConfigError(
                f"{path}: the {key!r} section is not used; remove it and set train.learning_rate, "
                "train.warmup_steps and train.weight_decay instead"
            )
    for keys, value in _owned_values(config, world_size).items():
        node = merged
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        current = node.get(keys[-1], "auto")
        if current != "auto" and current != value:
            raise ConfigError(
                f"{path}: {'.'.join(keys)} = {current!r} conflicts with the pipeline config's {value!r}; "
                "remove it from the JSON or set it to the same value (or 'auto')"
            )
        node[keys[-1]] = value
    return merged


def offloads_optimizer(ds_config: dict[str, Any]) -> bool:
    """Whether ZeRO keeps optimizer states off the accelerator (then DeepSpeed's CPU Adam must do the step)."""
    device = ds_config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device in ("cpu", "nvme")
