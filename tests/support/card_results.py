"""Typed results for every step's card, built without a run: realistic shapes, and the long unbroken
values (hashes, URIs, decoded blocks with long lines) that stretch a page when a card does not wrap them."""

from __future__ import annotations

from steps.config import DataConfig, EvaluateConfig
from steps.evaluate.decoding import settings_in_effect
from steps.results import ConvertResult, EvalSummary, EvaluateResult, InstructResult, PrepareResult, TrainResult
from steps.runtime.storage import StoredDir

LONG_LINE = "indicator=" + "9f86d081884c7d659a2feaa0c55ad015" * 8
"""A decoded sample's line with no break opportunity: 266 characters of hex, as corpora of IOCs have."""
ROOT = "file:///var/lib/tune/runs/TuneFlow/1733051234567890/storage/with/a/long/prefix"


def stored(name: str) -> StoredDir:
    return StoredDir(uri=f"{ROOT}/{name}", sha256="ab" * 32, files=12, bytes=21_000_000)


def prepare_result() -> PrepareResult:
    histogram = {"counts": [3, 10, 4], "edges": [0.0, 1000.0, 2000.0, 3000.0]}
    report = {
        "files_by_format": {"xml": 1, "csv": 2},
        "documents_by_format": {"xml": 1353},
        "dropped": {"too_short": 4},
        "duplicates": {"exact": 2, "near": 1},
        "redactions": {"aws_access_key": 3},
        "redacted_documents": 3,
        "skipped_files": [{"path": "corpus/" + "nested/" * 30 + "broken.pdf", "reason": "not a PDF: bad header"}],
        "skipped_file_count": 1,
        "kept_documents": 1353,
        "kept_chars": 2_345_678,
    }
    summary = {
        "corpus": "cwe",
        "report": report,
        "documents": {"train": 1240, "validation": 113},
        "tokens": {"train": 553_000, "validation": 29_000},
        "blocks": {"train": 2163, "validation": 113},
        "block_size": 256,
        "vocab_size": 4096,
        "eos_id": 0,
        "pad_id": 1,
        "prompts": 8,
        "doc_chars_histogram": histogram,
        "doc_tokens_histogram": histogram,
        "shards": {},
        "timings_s": {"read": 1.0},
        "validation_doc_ids": ["cwe:CWE-79"],
        "config": DataConfig().model_dump(),
        "sample_blocks": [
            f"CWE-79: Improper Neutralization of Input During Web Page Generation\n{LONG_LINE}\nDescription: x",
            "CWE-89: SQL Injection\nDescription: " + "word " * 120,
        ],
    }
    return PrepareResult(
        dataset=stored("prepare/dataset"), tokenizer=stored("prepare/tokenizer"), prepare_summary=summary
    )


def train_summary() -> dict:
    return {
        "final_checkpoint": f"{ROOT}/train/checkpoints/step-1200",
        "steps": 1200,
        "resumed_from_step": 0,
        "resumed_from": None,
        "final_loss": 2.345,
        "tokens_seen": 1_228_800,
        "world_size": 2,
        "zero_stage": 2,
        "parameters": 5_300_000,
        "flops_per_token": 3.2e7,
        "peak_tflops": None,
        "init_sha256": "cd" * 32,
        "elapsed_s": 361.5,
    }


def train_result() -> TrainResult:
    metric = {"loss": 2.3, "lr": 0.002, "grad_norm": 0.5, "tokens_seen": 1024, "tokens_per_s": 3400.0}
    metric |= {"step_s": 0.3, "tflops": 0.1, "mfu": None, "memory_gib": 1.2, "time": 0.0}
    metrics = [{"step": step, **metric} for step in (10, 20)]
    return TrainResult(checkpoint=stored("train"), train_summary=train_summary(), train_metrics=metrics)


def conversion() -> dict:
    checks = [{"name": f"model.layers.{i}.self_attn.q_proj.weight", "shape": [256, 256], "norm": 9.1} for i in range(4)]
    return {
        "checkpoint": "step-1200",
        "step": 1200,
        "init_sha256": "cd" * 32,
        "zero_stage": 2,
        "trained_world_size": 2,
        "dtype": "fp32",
        "tensors": 39,
        "parameters": 5_300_000,
        "written_bytes": 21_000_000,
        "shards": 3,
        "all_tensors_checked": True,
        "max_logit_difference": 1.2e-6,
        "tolerance": 1e-4,
        "logits_match": True,
        "files": ["model-00001-of-00003.safetensors"],
        "tensor_checks": checks,
    }


def convert_result() -> ConvertResult:
    return ConvertResult(model=stored("convert/model"), conversion=conversion())


def eval_summary() -> dict:
    metrics = {"probes": 1876, "exact_match": 0.0096, "answer_logprob_per_token": -2.969, "choice_accuracy": 0.483}
    before = {**metrics, "exact_match": 0.0, "answer_logprob_per_token": -8.368, "choice_accuracy": 0.265}
    speed = {"tokens": 192, "seconds": 2.0, "tokens_per_s": 96.0, "latency_s_mean": 0.25, "latency_s_p50": 0.25}
    return {
        "prompts": 8,
        "prompt_sources": {"heldout": 8, "user": 0},
        "engines": ["hf", "deepspeed", "zero"],
        "generation": settings_in_effect(EvaluateConfig()),  # greedy, with num_beams 4 configured
        "perplexity": {"tuned": 25.84, "untuned": 4334.42, "ratio": 25.84 / 4334.42},
        "perplexity_blocks": 64,
        "probes": {"tuned": {"all": metrics}, "untuned": {"all": before}},
        "throughput": {e: speed for e in ("hf", "deepspeed", "zero")},
        "agreement_with": "hf",
        "agreement": {"hf": 1.0, "deepspeed": 1.0, "zero": 1.0},
        "agreement_required": True,
        "engines_agree": True,
        "engine_notes": {"hf": [], "deepspeed": ["kernel injection off: CUDA only"], "zero": []},
        "world_size": 2,
        "device": "cpu",
    }


def evaluate_result() -> EvaluateResult:
    row = {"source": "heldout", "doc_id": "cwe:CWE-79", "prompt": "CWE-79: " + LONG_LINE, "reference": LONG_LINE}
    row |= {"generation": LONG_LINE, "tokens": 24, "token_ids": [5] * 24, "latency_s": 0.25}
    table = [{"index": i, "engine": e, **row} for i in range(2) for e in ("hf", "deepspeed", "zero")]
    probe = {"index": 0, "model": "tuned", "kind": "id_to_name", "split": "train", "prompt": "CWE-79:"}
    probe |= {"answer": " Improper Neutralization", "choices": [" Improper Neutralization", " Other"]}
    probe |= {"suffix": "", "weakness": "CWE-79", "answer_logprob_per_token": -1.0, "picked": " Other"}
    probe |= {"choice_correct": False, "completion": " Improper " + LONG_LINE, "exact_match": False}
    return EvaluateResult(
        evaluation=stored("evaluate"),
        eval_summary=EvalSummary.model_validate(eval_summary()),
        eval_table=table,
        probes=[probe],
    )


def instruct_result() -> InstructResult:
    summary = {**train_summary(), "objective": "sft", "method": "lora", "steps": 80, "trainable_parameters": 921_600}
    metric = train_result().train_metrics[0].model_dump()
    metrics = [{**metric, "step": 20, "held_out_loss": 1.234, "held_out_choice_accuracy": 0.625}]
    checkpoint = stored("instruct/train")
    return InstructResult(instruct_checkpoint=checkpoint, instruct_summary=summary, instruct_metrics=metrics)


def instructed_evaluate_result() -> EvaluateResult:
    """An evaluation after instruction tuning: three models side by side, questions answered by every engine."""
    answers = {"questions": 48, "exact_match": 0.0, "contains_reference": 0.125, "choice_accuracy": 0.5, "stopped": 1.0}
    by_model = {
        name: {"perplexity": ppl, "general_perplexity": 30.5, "answers": {"all": answers, "id_to_name": answers}}
        for name, ppl in (("base", 19.87), ("pretrained", 11.02), ("instructed", 11.31))
    }
    summary = {**eval_summary(), "questions": 48, "by_model": by_model}
    result = evaluate_result()
    question = {"source": "question", "doc_id": "cwe#CWE-1004/id_to_name/0", "prompt": "What is CWE-1004?"}
    question |= {"reference": "CWE-1004 is Sensitive Cookie Without 'HttpOnly' Flag.", "generation": LONG_LINE}
    question |= {"tokens": 32, "token_ids": [5] * 32, "latency_s": 0.5}
    table = [row.model_dump() for row in result.eval_table]
    table += [{"index": 2, "engine": e, **question} for e in ("hf", "deepspeed", "zero")]
    answer = {"question_id": "q", "kind": "id_to_name", "subject": "CWE-1004", "question": "What is CWE-1004?"}
    answer |= {"reference": "r", "answer": "a cookie flag", "stopped": True, "exact_match": False}
    answer |= {"contains_reference": False, "picked": "r", "choice_correct": True}
    return EvaluateResult(
        evaluation=stored("evaluate"),
        eval_summary=EvalSummary.model_validate(summary),
        eval_table=table,
        answers=[{"model": "base", **answer}, {"model": "instructed", **answer}],
    )
