"""The evaluation of one converted model in every torchrun rank: perplexity, probes, each engine's generations.

Called by `python -m steps.evaluate` (see `steps.evaluate.__main__`). Writes
`generations.parquet` (one row per prompt and engine), `probes.parquet` (every probe
scored on the tuned and the untuned model) and `eval_summary.json`
(`steps.results.EvalSummary`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from steps.config import TuneConfig
from steps.evaluate.decoding import settings_in_effect
from steps.evaluate.engines import build_engine
from steps.evaluate.evaluation_folder import EVAL_SUMMARY_FILE, GENERATIONS_FILE, PROBES_FILE, PROGRESS_FILE
from steps.evaluate.general_text import general_blocks_like, general_source
from steps.evaluate.generation import agreement_rates, check_agreement, run_engine, shard_indices
from steps.evaluate.probe_scoring import score_probes
from steps.evaluate.probes import Probe, build_probes, summarize
from steps.evaluate.progress import NO_PROGRESS, Progress
from steps.evaluate.prompts import load_prompts
from steps.formats.blocks import load_blocks
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


def run_evaluation(
    config: TuneConfig,
    model_dir: Path,
    dataset_dir: Path,
    out_dir: Path,
    base_model: Path | None,
) -> EvalSummary:
    settings = config.evaluate
    tokenizer = load_tokenizer(model_dir)
    # Bad user files fail here, before any rank loads a model.
    prompts = load_prompts(dataset_dir, settings.prompt_file, tokenizer)
    probes = build_probes(config, dataset_dir)
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
    del tuned
    untuned = initial_model(config.model, base_model, tokenizer)
    # The fingerprint training recorded of its starting weights travels in the model folder's conversion record.
    if state_dict_sha256(untuned) != read_conversion(model_dir).init_sha256:
        raise RuntimeError(
            "the rebuilt untuned model differs from the one training started from; "
            "model.init_seed or the base model changed between train and evaluate"
        )
    ppl_untuned, probes_untuned = score_model(untuned, tokenizer, blocks, probes, "untuned", ctx, progress)
    general_untuned = perplexity(untuned, general, ctx) if general else None
    del untuned

    rows, throughput, tokens_by_engine, notes = [], {}, {}, {}
    for name in settings.engines:
        progress.scope = f"{name} engine"
        progress.note(f"loading the {name} engine")
        engine = build_engine(name, model_dir, ctx, settings)
        notes[name] = engine.notes
        barrier()
        started = time.perf_counter()
        results = run_engine(engine, prompts, settings, tokenizer, ctx, progress)
        elapsed = time.perf_counter() - started
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
        tokens_by_engine[name] = [r["tokens"] for r in results]
        for prompt, result in zip(prompts, results, strict=True):
            rows.append(
                {
                    "index": result["index"],
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
        }
    )
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), out_dir / GENERATIONS_FILE)
        if probes:
            pq.write_table(pa.Table.from_pylist(probes_tuned + probes_untuned), out_dir / PROBES_FILE)
        (out_dir / EVAL_SUMMARY_FILE).write_text(summary.model_dump_json(indent=1))
    shutdown()
    return summary
