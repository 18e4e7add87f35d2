"""The console line rank 0 prints per logged step, and the regexes that read it back.

SageMaker turns a training job's log lines into CloudWatch metrics with regexes
(`MetricDefinitions`); they are defined here, beside the line they parse, and a
unit test feeds one to the other. Nothing here needs torch.
"""

from __future__ import annotations

from typing import Any

SAGEMAKER_METRIC_DEFINITIONS = [
    {"Name": "train:loss", "Regex": r"loss ([0-9.]+)"},
    {"Name": "train:tokens_per_s", "Regex": r"([0-9.]+) tok/s"},
    {"Name": "train:held_out_choice_accuracy", "Regex": r"held-out choice ([0-9.]+)"},
]


def clock(seconds: float) -> str:
    """`H:MM:SS`."""
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def progress_line(record: dict[str, Any], total_steps: int, eta_s: float) -> str:
    """`step  10/40  loss 5.1234  lr ...  1234 tok/s  ...  eta 0:01:02` for one metrics record."""
    mfu = f"  mfu {record['mfu']:.1%}" if record.get("mfu") is not None else ""
    held_out = ""
    if record.get("held_out_loss") is not None:  # instruction tuning's scoring steps
        held_out = f"  held-out loss {record['held_out_loss']:.4f}"
    if record.get("held_out_choice_accuracy") is not None:
        held_out += f"  held-out choice {record['held_out_choice_accuracy']:.3f}"
    return (
        f"step {record['step']:>6}/{total_steps}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
        f"grad_norm {record['grad_norm']:.3f}  {record['tokens_per_s']:.0f} tok/s  "
        f"{record['tflops']:.2f} TFLOP/s{mfu}  mem {record['memory_gib']:.2f} GiB{held_out}  eta {clock(eta_s)}"
    )
