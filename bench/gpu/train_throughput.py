"""Part 2 of bench/gpu/run.sh: training throughput of a ~1.1B Llama (TinyLlama's shape), bf16, sequence 2048,
ZeRO-2 on one GPU, through our training entrypoint (`python -m steps.train` under torchrun).

    python bench/gpu/train_throughput.py OUT.json [--steps 30 --micro-batch 8 --stage 2 --peak 790]

Tokens/s, TFLOP/s per device and MFU are the medians of the logged windows after the first
(which holds allocator warm-up); MFU is against `--peak`, the dense bf16 rate measured for a
large matrix product on the H100/H200 of the device machine (790 TFLOP/s), and also against
the data-sheet peak our metrics look up by device name. Peak memory is torch's
max_memory_allocated. Target: MFU >= 45%. Writes one JSON object and prints it as one line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from steps.config import TuneConfig, write_config
from steps.formats.train_folder import TRAIN_SUMMARY_FILE
from steps.runtime.launch import run_torchrun
from tests.support.synthetic_dataset import write_synthetic_dataset

TINYLLAMA = {
    "model.hidden_size": 2048,
    "model.num_layers": 22,
    "model.num_heads": 32,
    "model.num_kv_heads": 4,
    "model.intermediate_size": 5632,
    "model.max_position_embeddings": 2048,
}
VOCAB, SEQUENCE = 32000, 2048
# --smoke: the same script at a size a CPU runs in seconds (checks the script, measures nothing).
SMOKE = {"model.hidden_size": 64, "model.num_layers": 2, "model.num_heads": 2, "model.num_kv_heads": 2}
SMOKE |= {"model.intermediate_size": 128, "model.max_position_embeddings": 128}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--stage", type=int, default=2)
    parser.add_argument("--peak", type=float, default=790.0, help="measured dense bf16 TFLOP/s of the device")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape, vocab, sequence = (SMOKE, 512, 128) if args.smoke else (TINYLLAMA, VOCAB, SEQUENCE)
    log_every = max(1, args.steps // 6)
    with tempfile.TemporaryDirectory(prefix="bench-train-gpu-") as work:
        work = Path(work)
        dataset, tokenizer = write_synthetic_dataset(work / "data", vocab, sequence, args.steps * args.micro_batch)
        config = TuneConfig().with_overrides(
            **shape,
            **{
                "data.vocab_size": vocab,
                "data.block_size": sequence,
                "train.max_steps": args.steps,
                "train.micro_batch_size": args.micro_batch,
                "train.dtype": "fp32" if args.smoke else "bf16",
                "train.warmup_steps": 5,
                "train.log_every": log_every,
                "train.checkpoint_every": args.steps,
                "train.nproc_per_node": 1,
                "train.gradient_checkpointing": args.checkpointing,
                "deepspeed.zero_stage": args.stage,
            },
        )
        train_args = ["--config", str(write_config(config, work / "config.json")), "--out", str(work / "train")]
        train_args += ["--dataset", str(dataset), "--tokenizer", str(tokenizer)]
        run_torchrun("steps.train", train_args, nproc_per_node=1)
        records = [json.loads(line) for line in (work / "train" / "metrics.jsonl").read_text().splitlines()]
        summary = json.loads((work / "train" / TRAIN_SUMMARY_FILE).read_text())
    steady = records[1:] or records
    tflops = statistics.median(r["tflops"] for r in steady)
    result = {
        "bench": "gpu_train_throughput",
        "parameters": summary["parameters"],
        "sequence": sequence,
        "micro_batch": args.micro_batch,
        "zero_stage": args.stage,
        "activation_checkpointing": args.checkpointing,
        "steps": args.steps,
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in steady), 1),
        "tflops_per_device": round(tflops, 1),
        "peak_tflops_measured": args.peak,
        "mfu": round(tflops / args.peak, 4),
        "peak_tflops_datasheet": summary["peak_tflops"],
        "mfu_datasheet": round(tflops / summary["peak_tflops"], 4) if summary["peak_tflops"] else None,
        "memory_gib": round(max(r["memory_gib"] for r in records), 2),
        "loss_first_last": [round(records[0]["loss"], 3), round(records[-1]["loss"], 3)],
        "target": {"mfu": 0.45},
        "meets_target": tflops / args.peak >= 0.45,
    }
    args.out.write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
