"""Training metrics: model FLOPs and MFU, memory, the JSONL log, console progress (`progress_line`), trackers.

Rank 0 owns the log; the others only take part in the all-reduces that feed it.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

from steps.config import TuneConfig
from steps.train.progress_line import progress_line

# Dense (no sparsity) tensor-core peaks in TFLOP/s per device, from the vendors' data
# sheets, for bf16/fp16; fp32 training runs on TF32 cores at half of that on these parts.
# Matched against torch.cuda.get_device_name() by substring, most specific first.
PEAK_TFLOPS_16BIT = [
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("V100", 125.0),
]


def peak_tflops(config: TuneConfig) -> float | None:
    """This device's dense peak at the training dtype: from the config, or looked up by name; None if unknown."""
    if config.train.peak_tflops:
        return config.train.peak_tflops
    if not torch.cuda.is_available():
        return None  # CPUs have no published dense peak worth an MFU figure; set train.peak_tflops
    name = torch.cuda.get_device_name()
    for pattern, peak in PEAK_TFLOPS_16BIT:
        if pattern in name:
            return peak if config.train.dtype in ("bf16", "fp16") else peak / 2
    return None


def flops_per_token(parameters: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6 N for the matmuls of forward and backward, plus attention scores.

    The attention term is 12 · layers · hidden · seq (PaLM, appendix B). Recomputed
    activations (gradient checkpointing) are not counted: MFU measures model FLOPs.
    """
    return 6.0 * parameters + 12.0 * num_layers * hidden_size * seq_len


def memory_gib() -> dict[str, float]:
    """Peak device memory (GPU) or peak resident memory of this process (CPU), in GiB."""
    if torch.cuda.is_available():
        return {"memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    return {"memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class Tracker:
    """Optional hand-off to TensorBoard or Weights & Biases; keys come from the environment only."""

    def __init__(self, kind: str, log_dir: Path, run_config: dict[str, Any]) -> None:
        self.kind, self.writer = kind, None
        if kind == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RuntimeError(
                    "train.tracker is tensorboard but it is not installed: pip install tensorboard"
                ) from None
            self.writer = SummaryWriter(str(log_dir / "tensorboard"))
        elif kind == "wandb":
            try:
                import wandb
            except ImportError:
                raise RuntimeError("train.tracker is wandb but it is not installed: pip install wandb") from None
            if not os.environ.get("WANDB_API_KEY"):
                raise RuntimeError(
                    "train.tracker is wandb but WANDB_API_KEY is not set; pass it with Metaflow @secrets "
                    "or the environment, never as a parameter"
                )
            self.writer = wandb.init(project=os.environ.get("WANDB_PROJECT", "security-llm-tuning"), config=run_config)

    def log(self, record: dict[str, Any]) -> None:
        if self.kind == "tensorboard":
            for key, value in record.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])
        elif self.kind == "wandb":
            self.writer.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def close(self) -> None:
        if self.writer is not None:
            (self.writer.close if self.kind == "tensorboard" else self.writer.finish)()


class MetricsLog:
    """Rank 0's JSONL metrics, console progress with ETA, and the optional tracker."""

    def __init__(self, path: Path, is_main: bool, total_steps: int, start_step: int, tracker: Tracker | None) -> None:
        self.total, self.start_step = total_steps, start_step
        self.handle = open(path, "a") if is_main else None
        self.tracker = tracker if is_main else None
        self.started = time.perf_counter()

    def log(self, record: dict[str, Any]) -> None:
        if self.handle is None:
            return
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.tracker:
            self.tracker.log(record)
        elapsed = time.perf_counter() - self.started
        eta = elapsed / max(1, record["step"] - self.start_step) * (self.total - record["step"])
        print(progress_line(record, self.total, eta), flush=True)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.tracker:
            self.tracker.close()
