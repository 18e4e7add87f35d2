"""Did continued pretraining help? SmolLM2 on the CWE default, four arms, held-out answer accuracy of each.

    python bench/knowledge_injection.py [--config configs/smollm2_instruct.yaml] [--work DIR]

The arms, each trained on the same budget (the config's: train.* for continued pretraining, instruct.* for
instruction tuning, the same steps, batch and rate wherever an arm has that phase):
  base                      SmolLM2-135M-Instruct as it comes
  instruction tuning only   instruct.* from the base model
  continued pretraining     train.* on the CWE catalogue from the base model (no instruction tuning)
  both                      train.* then instruct.*: what configs/smollm2_instruct.yaml's flow run does

The held-out questions are prepare's for `cwe`: about weaknesses whose conversations are never in the
instruction data, while their catalogue documents are in the pretraining corpus (steps.prepare.instructions_cwe).
So a right answer on them can only come from what the model knew or what continued pretraining taught, in the
answer format instruction tuning taught on other weaknesses. Each arm is asked the same questions through the
chat template (greedy, instruct.max_new_tokens): `contains_reference` (the answer holds the weakness's name or
CWE ID as a whole word), exact match, multiple-choice accuracy by likelihood, and the share that stopped.

The stages run as the README's "Running the stages without Metaflow" commands: prepare once, continued
pretraining and its conversion once (shared by two arms), instruction tuning from each starting model, and two
evaluate runs (`--pretrained-model` gives the continued-pretrained column beside the tuned one). Evaluate runs
the `hf` engine only, without probes (the flow's own run checks the engines and probes). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

from steps.config import load_config, validate_config, write_config
from steps.project_files import CONFIGS
from steps.runtime.launch import run_module, run_torchrun

ARMS = ("base", "instruction_tuning_only", "continued_pretraining_only", "both")


def bench_config(path: Path, work: Path) -> Path:
    """The config with evaluate cut to what the arms are compared on, written for the stage entry points."""
    raw = yaml.safe_load(path.read_text())
    raw["evaluate"] = {**raw.get("evaluate", {}), "engines": ["hf"], "probes": 0}
    raw["instruct"] = {**raw["instruct"], "eval_every": 0}  # the live card's scoring: not needed here
    return write_config(validate_config(raw, str(path)), work / "config.json")


def timed(what: str, seconds: dict, run) -> None:
    started = time.perf_counter()
    run()
    seconds[what] = round(time.perf_counter() - started, 1)
    print(f"knowledge_injection: {what} took {seconds[what]:.0f} s", flush=True)


def answers_of(summary: dict, column: str) -> dict:
    scores = summary["by_model"][column]
    return {
        "held_out_answers": scores["answers"]["all"],
        "by_kind": {kind: metrics for kind, metrics in scores["answers"].items() if kind != "all"},
        "perplexity": round(scores["perplexity"], 3),
        "general_perplexity": round(scores["general_perplexity"], 3) if scores["general_perplexity"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIGS / "smollm2_instruct.yaml")
    parser.add_argument("--work", type=Path, default=Path("/tmp/knowledge-injection"))
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    config_file = bench_config(args.config, work)
    config = load_config(config_file)
    ranks = config.train.nproc_per_node
    prepared, seconds = work / "prepared", {}
    base, tokenizer, instructions = prepared / "base_model", prepared / "tokenizer", prepared / "instructions"
    common = ["--config", str(config_file)]

    def tune(objective: str, start: Path, out: Path) -> None:
        """Train from `start` and convert to `<out>-model`."""
        data = ["--instructions", instructions] if objective == "sft" else ["--dataset", prepared / "dataset"]
        command = [*common, "--objective", objective, *data, "--tokenizer", tokenizer, "--base-model", start]
        run_torchrun("steps.train", [str(a) for a in [*command, "--out", out]], ranks)
        command = [*common, "--checkpoint", out, "--tokenizer", tokenizer, "--base-model", start]
        run_module("steps.convert", [str(a) for a in [*command, "--out", out.with_name(out.name + "-model")]])

    def evaluate(model: Path, out: Path, pretrained: Path | None) -> dict:
        command = [*common, "--model", str(model), "--dataset", str(prepared / "dataset"), "--out", str(out)]
        command += ["--base-model", str(base), "--instructions", str(instructions)]
        command += ["--pretrained-model", str(pretrained)] if pretrained else []
        run_torchrun("steps.evaluate", command, config.evaluate.nproc)
        return json.loads((out / "eval_summary.json").read_text())

    timed("prepare", seconds, lambda: run_module("steps.prepare", [*common, "--out", str(prepared)]))
    timed("continued_pretraining", seconds, lambda: tune("pretrain", base, work / "cpt"))
    timed("instruction_tuning_from_base", seconds, lambda: tune("sft", base, work / "sft-base"))
    timed("instruction_tuning_after_pretraining", seconds, lambda: tune("sft", work / "cpt-model", work / "sft-cpt"))
    summaries: dict[str, dict] = {}

    def evaluate_both() -> None:
        summaries["both"] = evaluate(work / "sft-cpt-model", work / "eval-both", work / "cpt-model")

    def evaluate_instruction_only() -> None:
        summaries["sft"] = evaluate(work / "sft-base-model", work / "eval-sft", None)

    timed("evaluate_both", seconds, evaluate_both)
    timed("evaluate_instruction_only", seconds, evaluate_instruction_only)

    arms = {
        "base": answers_of(summaries["both"], "base"),
        "instruction_tuning_only": answers_of(summaries["sft"], "instructed"),
        "continued_pretraining_only": answers_of(summaries["both"], "pretrained"),
        "both": answers_of(summaries["both"], "instructed"),
    }
    instruction = json.loads((instructions / "summary.json").read_text())
    train, instruct = config.train, config.instruct
    cpt_tokens = json.loads((work / "cpt" / "train_summary.json").read_text())["tokens_seen"]
    sft_tokens = json.loads((work / "sft-cpt" / "train_summary.json").read_text())["tokens_seen"]
    result = {
        "bench": "knowledge_injection",
        "model": config.model.base_model,
        "corpus": config.data.corpus,
        "held_out_questions": summaries["both"]["questions"],
        "held_out_weaknesses": len(instruction["held_out_subjects"]),
        "training_conversations": instruction["conversations"]["train"],
        "continued_pretraining": {
            "steps": train.max_steps,
            "tokens": cpt_tokens,
            "learning_rate": train.learning_rate,
            "blocks_per_step": train.micro_batch_size * train.gradient_accumulation_steps * ranks,
            "block_size": config.data.block_size,
        },
        "instruction_tuning": {
            "method": instruct.method,
            "steps": instruct.max_steps,
            "tokens": sft_tokens,
            "learning_rate": instruct.peak_learning_rate,
            "conversations_per_step": instruct.micro_batch_size * instruct.gradient_accumulation_steps * ranks,
        },
        "answers": f"greedy, at most {instruct.max_new_tokens} new tokens, through the chat template",
        "arms": {arm: arms[arm] for arm in ARMS},
        "seconds": seconds,
        "cpu_cores": os.cpu_count(),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
