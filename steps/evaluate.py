"""evaluate: batch generation with each engine and held-out perplexity; runs under torchrun.

    python -m torch.distributed.run --nproc_per_node 2 -m steps.evaluate \
        --config run.json --model DIR --dataset DIR --train-summary FILE --out DIR [--base-model DIR]

Writes `<out>/generations.parquet` (one row per prompt and engine: prompt,
reference, engine, generation, tokens, latency), `<out>/probes.parquet` (every
domain probe scored on the tuned and the untuned model) and
`<out>/eval_summary.json` (perplexity and probe metrics before and after
tuning, throughput and latency per engine, agreement between engines).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.distributed.elastic.multiprocessing.errors import record

from steps.config import EvaluateConfig, TuneConfig, load_config
from steps.distributed import (
    ON_GPU,
    DistContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown,
)
from steps.domain_tokenizer import load_tokenizer
from steps.eval_data import load_prompts
from steps.inference_engines import InferenceEngine, build_engine
from steps.launch import entrypoint_parser
from steps.model import initial_model, load_pretrained, state_dict_sha256
from steps.packing import load_blocks
from steps.probes import Probe, build_probes, score_probes, summarize


def shard_indices(count: int, world_size: int, rank: int) -> list[int]:
    """Rank `rank`'s prompts: every world_size-th one, so shares differ by at most one."""
    return list(range(rank, count, world_size))


def batches_per_rank(count: int, world_size: int, batch_size: int) -> int:
    """Generate calls every rank makes, so that synced engines step together even on uneven shares."""
    return math.ceil(math.ceil(count / world_size) / batch_size) if count else 0


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _trim(tokens: list[int], eos_ids: set[int], pad_id: int) -> list[int]:
    """Tokens up to and including the first end-of-sequence id; padding after an early stop removed."""
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: position + 1]
    return [t for t in tokens if t != pad_id] if pad_id not in eos_ids else tokens


def run_engine(
    engine: InferenceEngine, prompts: list[dict], settings: EvaluateConfig, tokenizer, ctx: DistContext
) -> list[dict]:
    """Generations for every prompt, in input order, identical on every rank."""
    batch_size = settings.batch_size
    if engine.shards_prompts:
        mine = shard_indices(len(prompts), ctx.world_size, ctx.rank)
        calls = batches_per_rank(len(prompts), ctx.world_size, batch_size)
    else:
        mine = list(range(len(prompts)))
        calls = math.ceil(len(prompts) / batch_size)
    eos_ids = [tokenizer.eos_token_id, *settings.extra_eos_ids]
    results = []
    for call in range(calls):
        chunk = mine[call * batch_size : (call + 1) * batch_size]
        # A rank with nothing left still steps with a stand-in prompt, so synced ranks never hang.
        rows = [prompts[i]["prompt_ids"] for i in chunk] or [prompts[0]["prompt_ids"]]
        ids, mask = _left_pad(rows, tokenizer.pad_token_id, ctx.device)
        started = time.perf_counter()
        new = engine.generate(ids, mask, settings, eos_ids, tokenizer.pad_token_id).tolist()
        latency = time.perf_counter() - started
        for index, tokens in zip(chunk, new, strict=False):
            tokens = _trim(tokens, set(eos_ids), tokenizer.pad_token_id)
            results.append({"index": index, "tokens": tokens, "latency_s": latency / len(rows)})
    if engine.shards_prompts:
        results = [r for part in all_gather_objects(results) for r in part]
    results.sort(key=lambda r: r["index"])
    if [r["index"] for r in results] != list(range(len(prompts))):
        raise RuntimeError(f"engine {engine.name} returned prompts {[r['index'] for r in results]}, expected each once")
    return results


def perplexity(model: torch.nn.Module, blocks, ctx: DistContext) -> float:
    """exp of the mean next-token loss over held-out blocks, shared across ranks."""
    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in shard_indices(len(blocks), ctx.world_size, ctx.rank):
            ids = torch.tensor(blocks[i : i + 1], dtype=torch.long, device=ctx.device)
            loss = model(input_ids=ids, labels=ids).loss
            tokens = ids.shape[1] - 1
            nll += loss.item() * tokens
            count += tokens
    total_nll, total_count = all_reduce_sum([nll, count], ctx.device)
    return math.exp(total_nll / total_count)


def probe_rows(model, tokenizer, probes: list[Probe], label: str, ctx: DistContext) -> list[dict]:
    """Every probe scored once, shared across ranks, in probe order; `model` column = label."""
    mine = shard_indices(len(probes), ctx.world_size, ctx.rank)
    scored = score_probes(model, tokenizer, [probes[i] for i in mine], ctx.device) if mine else []
    indexed = [{"index": i, "model": label, **row} for i, row in zip(mine, scored, strict=True)]
    return sorted((r for part in all_gather_objects(indexed) for r in part), key=lambda r: r["index"])


def score_model(model, tokenizer, blocks, probes: list[Probe], label: str, ctx: DistContext) -> tuple[float, list]:
    model = model.to(ctx.device)
    return perplexity(model, blocks, ctx), probe_rows(model, tokenizer, probes, label, ctx)


def agreement_rates(tokens_by_engine: dict[str, list[list[int]]]) -> dict[str, float]:
    """Share of prompts on which each engine's tokens equal the first engine's."""
    first = next(iter(tokens_by_engine.values()))
    return {
        name: sum(a == b for a, b in zip(tokens, first, strict=True)) / len(first)
        for name, tokens in tokens_by_engine.items()
    }


def check_agreement(rates: dict[str, float], settings: EvaluateConfig) -> bool:
    """On CPU in fp32 with greedy search the engines must agree token for token; elsewhere it is reported."""
    required = not ON_GPU and settings.decoding == "greedy"
    disagreeing = {name: rate for name, rate in rates.items() if rate < 1.0}
    if required and disagreeing:
        raise RuntimeError(
            f"engines disagree under greedy fp32 decoding on CPU (share of prompts agreeing with "
            f"{next(iter(rates))}: {disagreeing}); one engine computes a different model"
        )
    return required


def run_evaluation(
    config: TuneConfig, model_dir: Path, dataset_dir: Path, train_summary: dict, out_dir: Path, base_model: Path | None
) -> dict[str, Any]:
    settings = config.evaluate
    tokenizer = load_tokenizer(model_dir)
    # Bad user files fail here, before any rank loads a model.
    prompts = load_prompts(dataset_dir, settings.prompt_file, tokenizer)
    probes = build_probes(config, dataset_dir)
    ctx = init_distributed()
    blocks = load_blocks(dataset_dir / "validation")[: settings.perplexity_blocks]

    ppl_tuned, probes_tuned = score_model(load_pretrained(model_dir), tokenizer, blocks, probes, "tuned", ctx)
    untuned = initial_model(config.model, base_model, tokenizer)
    if state_dict_sha256(untuned) != train_summary["init_sha256"]:
        raise RuntimeError(
            "the rebuilt untuned model differs from the one training started from; "
            "model.init_seed or the base model changed between train and evaluate"
        )
    ppl_untuned, probes_untuned = score_model(untuned, tokenizer, blocks, probes, "untuned", ctx)
    del untuned

    rows, throughput, tokens_by_engine, notes = [], {}, {}, {}
    for name in settings.engines:
        engine = build_engine(name, model_dir, ctx, settings)
        notes[name] = engine.notes
        barrier()
        started = time.perf_counter()
        results = run_engine(engine, prompts, settings, tokenizer, ctx)
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
    summary = {
        "prompts": len(prompts),
        "prompt_sources": {s: sum(p["source"] == s for p in prompts) for s in ("heldout", "user")},
        "engines": settings.engines,
        "generation": settings.model_dump(
            include={"decoding", "max_new_tokens", "batch_size", "extra_eos_ids", "temperature", "top_p", "num_beams"}
        ),
        "perplexity": {"tuned": ppl_tuned, "untuned": ppl_untuned, "ratio": ppl_tuned / ppl_untuned},
        "perplexity_blocks": len(blocks),
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
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), out_dir / "generations.parquet")
        if probes:
            pq.write_table(pa.Table.from_pylist(probes_tuned + probes_untuned), out_dir / "probes.parquet")
        (out_dir / "eval_summary.json").write_text(json.dumps(summary, indent=1))
    shutdown()
    return summary


# @record makes torchrun's failure summary carry this rank's exception, not only its exit code.
@record
def main(argv: list[str] | None = None) -> None:
    required = ["config", "model", "dataset", "train-summary", "out"]
    args = entrypoint_parser(__doc__, required).parse_args(argv)
    summary = json.loads(args.train_summary.read_text())
    run_evaluation(load_config(args.config), args.model, args.dataset, summary, args.out, args.base_model)


if __name__ == "__main__":
    main()
