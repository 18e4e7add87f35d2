"""Batch generation with one engine over all ranks, and how the engines' outputs compare.

Prompts are sharded across ranks for engines that generate independently per rank;
every rank makes the same number of generate calls, so engines whose ranks must
step together (ZeRO-Inference) never hang on uneven shares.
"""

from __future__ import annotations

import math
import time

import torch

from steps.config import EvaluateConfig
from steps.evaluate.engines import InferenceEngine
from steps.evaluate.progress import NO_PROGRESS, Progress
from steps.runtime.distributed import ON_GPU, DistContext, all_gather_objects


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
    engine: InferenceEngine,
    prompts: list[dict],
    settings: EvaluateConfig,
    tokenizer,
    ctx: DistContext,
    progress: Progress = NO_PROGRESS,
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
    progress.begin("generations", len(mine), "prompts")
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
        progress.advance(len(chunk))
    if engine.shards_prompts:
        results = [r for part in all_gather_objects(results) for r in part]
    results.sort(key=lambda r: r["index"])
    if [r["index"] for r in results] != list(range(len(prompts))):
        raise RuntimeError(f"engine {engine.name} returned prompts {[r['index'] for r in results]}, expected each once")
    return results


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
