"""The evaluation of one converted model in every torchrun rank: perplexity, probes, each engine's generations.

Called by `python -m steps.evaluate` (see `steps.evaluate.__main__`). Writes
`generations.parquet` (one row per prompt and engine), `probes.parquet` (every probe
scored on the tuned and the untuned model) and `eval_summary.json`
(`steps.results.EvalSummary`). With instruction tuning, the held-out questions are asked of
the base model, the continued-pretrained one (when pretraining ran) and the instruction-tuned
one (`answers.parquet`, and the summary's `by_model` columns); the tuned model answers through
every engine.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from steps.config import TuneConfig
from steps.evaluate.answer_scoring import (
    answer_settings,
    answer_summary,
    ask_model,
    choices_on_ranks,
    question_items,
)
from steps.evaluate.decoding import settings_in_effect
from steps.evaluate.engines import build_engine
from steps.evaluate.evaluation_folder import (
    ANSWERS_FILE,
    EVAL_SUMMARY_FILE,
    GENERATIONS_FILE,
    PROBES_FILE,
    PROGRESS_FILE,
)
from steps.evaluate.general_text import general_blocks_like, general_source
from steps.evaluate.generation import agreement_rates, check_agreement, run_engine, shard_indices
from steps.evaluate.probe_scoring import score_probes
from steps.evaluate.probes import Probe, build_probes, summarize
from steps.evaluate.progress import NO_PROGRESS, Progress
from steps.evaluate.prompts import load_prompts
from steps.formats.blocks import load_blocks
from steps.formats.instruction_folder import read_questions
from steps.formats.model import initial_model, load_pretrained, state_dict_sha256
from steps.formats.model_folder import read_conversion
from steps.formats.tokenizer_folder import load_tokenizer
from steps.results import EvalSummary
from steps.runtime.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown,
)


def perplexity(model: torch.nn.Module, blocks, ctx: DistContext, progress: Progress = NO_PROGRESS) -> float:
    """exp of the mean next-token loss over held-out blocks, shared across ranks."""
    model.eval()
    nll, count = 0.0, 0
    mine = shard_indices(len(blocks), ctx.world_size, ctx.rank)
    progress.begin("perplexity", len(mine), "blocks")
    with torch.no_grad():
        for i in mine:
            ids = torch.tensor(blocks[i : i + 1], dtype=torch.long, device=ctx.device)
            loss = model(input_ids=ids, labels=ids).loss
            tokens = ids.shape[1] - 1
            nll += loss.item() * tokens
            count += tokens
            progress.advance()
    total_nll, total_count = all_reduce_sum([nll, count], ctx.device)
    return math.exp(total_nll / total_count)


def probe_shard(probes: list[Probe], world_size: int, rank: int) -> list[int]:
    """Rank `rank`'s probes: every world_size-th of each kind.

    Probes come in (ID to name, description to name) pairs, so every other probe would give one rank
    all the completions and the other all the long descriptions, and one rank would wait for the other.
    """
    by_kind: dict[str, list[int]] = {}
    for index, probe in enumerate(probes):
        by_kind.setdefault(probe.kind, []).append(index)
    return sorted(i for group in by_kind.values() for i in group[rank::world_size])


def probe_rows(
    model, tokenizer, probes: list[Probe], label: str, ctx: DistContext, progress: Progress = NO_PROGRESS
) -> list[dict]:
    """Every probe scored once, shared across ranks, in probe order; `model` column = label."""
    mine = probe_shard(probes, ctx.world_size, ctx.rank)
    scored = score_probes(model, tokenizer, [probes[i] for i in mine], ctx.device, progress=progress) if mine else []
    indexed = [{"index": i, "model": label, **row} for i, row in zip(mine, scored, strict=True)]
    return sorted((r for part in all_gather_objects(indexed) for r in part), key=lambda r: r["index"])


def score_model(
    model, tokenizer, blocks, probes: list[Probe], label: str, ctx: DistContext, progress: Progress
) -> tuple[float, list]:
    model = model.to(ctx.device)
    progress.scope = f"{label} model"
    return perplexity(model, blocks, ctx, progress), probe_rows(model, tokenizer, probes, label, ctx, progress)


def _check_start(model, expected_sha256: str, what: str) -> None:
    """A model rebuilt or loaded here must be the one the next training started from (its fingerprint)."""
    if state_dict_sha256(model) != expected_sha256:
        raise RuntimeError(
            f"the {what} differs from the one training started from; model.init_seed or the base model changed "
            "between train and evaluate"
        )


def run_evaluation(
    config: TuneConfig,
    model_dir: Path,
    dataset_dir: Path,
    out_dir: Path,
    base_model: Path | None,
    pretrained_model: Path | None = None,
    instructions: Path | None = None,
) -> EvalSummary:
    """Evaluate the run's model (`model_dir`); `pretrained_model`: the continued-pretrained model when the run
    instruction-tuned after it; `instructions`: the instruction dataset folder, whose questions are asked."""
    settings = config.evaluate
    tokenizer = load_tokenizer(model_dir)
    # Bad user files fail here, before any rank loads a model.
    prompts = load_prompts(dataset_dir, settings.prompt_file, tokenizer)
    probes = build_probes(config, dataset_dir)
    questions = read_questions(instructions) if instructions is not None else []
    ctx = init_distributed()
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)  # rank 0's progress goes there from the start
    # Rank 0 reports for all: the ranks' shares are even and they move together.
    progress = Progress(show=ctx.is_main, file=out_dir / PROGRESS_FILE)
    blocks = load_blocks(dataset_dir / "validation")[: settings.perplexity_blocks]

    general = general_blocks_like(
        settings, tokenizer, dataset_dir, base_model is not None
    )  # forgetting: perplexity far from the domain
    tuned = load_pretrained(model_dir)
    ppl_tuned, probes_tuned = score_model(tuned, tokenizer, blocks, probes, "tuned", ctx, progress)
    general_tuned = perplexity(tuned, general, ctx) if general else None
    tuned_choices = choices_on_ranks(tuned, tokenizer, questions, ctx) if questions else []
    del tuned
    # The fingerprint each training recorded of its starting weights travels in the model folder's conversion
    # record: the tuned model's is the continued-pretrained model's when instruction tuning followed pretraining.
    started_from = read_conversion(model_dir).init_sha256
    by_model: dict[str, dict] = {}
    answer_table: list[dict] = []
    if pretrained_model is not None:
        pretrained = load_pretrained(pretrained_model)
        _check_start(pretrained, started_from, "continued-pretrained model")
        started_from = read_conversion(pretrained_model).init_sha256
        rows, answers = ask_model(pretrained, "pretrained", tokenizer, questions, config, ctx, progress)
        progress.scope = "pretrained model"
        pretrained_scores = {
            "perplexity": perplexity(pretrained, blocks, ctx, progress),
            "general_perplexity": perplexity(pretrained, general, ctx) if general else None,
            "answers": answers,
        }
        answer_table += rows
        del pretrained
    untuned = initial_model(config.model, base_model, tokenizer)
    _check_start(untuned, started_from, "rebuilt untuned model")
    ppl_untuned, probes_untuned = score_model(untuned, tokenizer, blocks, probes, "untuned", ctx, progress)
    general_untuned = perplexity(untuned, general, ctx) if general else None
    if instructions is not None:
        rows, answers = ask_model(untuned, "base", tokenizer, questions, config, ctx, progress)
        by_model["base"] = {"perplexity": ppl_untuned, "general_perplexity": general_untuned, "answers": answers}
        answer_table = rows + answer_table
        if pretrained_model is not None:
            by_model["pretrained"] = pretrained_scores
    del untuned

    items = question_items(tokenizer, questions) if questions else []
    rows, throughput, tokens_by_engine, notes, tuned_answers = [], {}, {}, {}, None
    for name in settings.engines:
        progress.scope = f"{name} engine"
        progress.note(f"loading the {name} engine")
        engine = build_engine(name, model_dir, ctx, settings)
        notes[name] = engine.notes
        barrier()
        started = time.perf_counter()
        results = run_engine(engine, prompts, settings, tokenizer, ctx, progress)
        elapsed = time.perf_counter() - started
        answered = []
        if items:  # the tuned model's answers from every engine: the agreement below covers them
            progress.scope = f"{name} engine, questions"
            answered = run_engine(engine, items, answer_settings(config, tokenizer), tokenizer, ctx, progress)
            tuned_answers = tuned_answers or answered
        del engine
        generated = sum(len(r["tokens"]) for r in results)
        latencies = sorted(r["latency_s"] for r in results)
        throughput[name] = {
            "tokens": generated,
            "seconds": elapsed,
            "tokens_per_s": generated / elapsed,
            "latency_s_mean": sum(latencies) / len(latencies),
            "latency_s_p50": latencies[len(latencies) // 2],
        }
        tokens_by_engine[name] = [r["tokens"] for r in results + answered]
        # Questions are numbered after the prompts: one index per row and engine in the generations table.
        numbered = [(0, prompt, result) for prompt, result in zip(prompts, results, strict=True)]
        numbered += [(len(prompts), item, result) for item, result in zip(items, answered, strict=True)]
        for offset, prompt, result in numbered:
            rows.append(
                {
                    "index": offset + result["index"],
                    "source": prompt["source"],
                    "doc_id": prompt["doc_id"],
                    "engine": name,
                    "prompt": prompt["prompt"],
                    "reference": prompt["reference"],
                    "generation": tokenizer.decode(result["tokens"], skip_special_tokens=True),
                    "tokens": len(result["tokens"]),
                    "token_ids": result["tokens"],
                    "latency_s": result["latency_s"],
                }
            )
    if instructions is not None:
        tuned_rows, answers = answer_summary("instructed", questions, tuned_answers or [], tuned_choices, tokenizer)
        answer_table += tuned_rows
        by_model["instructed"] = {"perplexity": ppl_tuned, "general_perplexity": general_tuned, "answers": answers}

    rates = agreement_rates(tokens_by_engine)
    summary = EvalSummary.model_validate(
        {
            "prompts": len(prompts),
            "prompt_sources": {s: sum(p["source"] == s for p in prompts) for s in ("heldout", "user")},
            "engines": settings.engines,
            "generation": settings_in_effect(settings),
            "perplexity": {"tuned": ppl_tuned, "untuned": ppl_untuned, "ratio": ppl_tuned / ppl_untuned},
            "perplexity_blocks": len(blocks),
            "general_perplexity": None
            if general_tuned is None
            else {"tuned": general_tuned, "untuned": general_untuned, "ratio": general_tuned / general_untuned},
            "general_text": general_source(settings, base_model is not None) if general else None,
            "probes": {"tuned": summarize(probes_tuned), "untuned": summarize(probes_untuned)},
            "throughput": throughput,
            "agreement_with": settings.engines[0],
            "agreement": rates,
            "agreement_required": check_agreement(rates, settings),
            "engines_agree": all(rate == 1.0 for rate in rates.values()),
            "engine_notes": notes,
            "world_size": ctx.world_size,
            "device": str(ctx.device),
            "questions": len(questions),
            "by_model": by_model or None,
        }
    )
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), out_dir / GENERATIONS_FILE)
        if probes:
            pq.write_table(pa.Table.from_pylist(probes_tuned + probes_untuned), out_dir / PROBES_FILE)
        if answer_table:
            pq.write_table(pa.Table.from_pylist(answer_table), out_dir / ANSWERS_FILE)
        (out_dir / EVAL_SUMMARY_FILE).write_text(summary.model_dump_json(indent=1))
    shutdown()
    return summary
