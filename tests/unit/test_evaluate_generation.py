"""Generation across ranks: prompt shares, equal call counts, trimming, each search's new tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from steps.config import EvaluateConfig
from steps.evaluate.engines import InferenceEngine
from steps.evaluate.generation import _trim, agreement_rates, batches_per_rank, check_agreement, shard_indices


@pytest.mark.parametrize("count", [0, 1, 3, 5, 8, 13])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_prompt_goes_to_exactly_one_rank(count: int, world: int) -> None:
    shares = [shard_indices(count, world, rank) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize(("count", "world", "batch", "calls"), [(3, 2, 1, 2), (5, 2, 2, 2), (5, 2, 4, 1), (0, 2, 4, 0)])
def test_every_rank_makes_the_same_number_of_calls(count: int, world: int, batch: int, calls: int) -> None:
    assert batches_per_rank(count, world, batch) == calls
    for rank in range(world):
        assert len(shard_indices(count, world, rank)) <= calls * batch


def test_trim_stops_at_any_end_of_sequence_id_and_drops_padding() -> None:
    assert _trim([5, 6, 9, 7, 0], {0, 9}, pad_id=1) == [5, 6, 9]
    assert _trim([5, 6, 1, 1], {0}, pad_id=1) == [5, 6]


@pytest.mark.parametrize("decoding", ["greedy", "sampling", "beams"])
def test_each_search_returns_only_new_tokens(decoding: str) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    engine = InferenceEngine("hf", LlamaForCausalLM(config).eval(), shards_prompts=True)
    settings = EvaluateConfig(decoding=decoding, max_new_tokens=5, num_beams=2, seed=3)
    ids = torch.tensor([[0, 5, 6, 7], [9, 10, 11, 12]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    first = engine.generate(ids, mask, settings, eos_ids=[63], pad_id=0)
    assert first.shape[0] == 2 and 1 <= first.shape[1] <= 5
    # Sampling is seeded from the config, so tensor-parallel ranks (and reruns) draw the same tokens.
    assert torch.equal(first, engine.generate(ids, mask, settings, eos_ids=[63], pad_id=0))


def test_agreement_is_the_share_of_prompts_matching_the_first_engine() -> None:
    rates = agreement_rates({"hf": [[1, 2], [3]], "deepspeed": [[1, 2], [3]], "zero": [[1, 2], [4]]})
    assert rates == {"hf": 1.0, "deepspeed": 1.0, "zero": 0.5}


def test_engines_that_disagree_under_greedy_fp32_on_cpu_fail_the_evaluation() -> None:
    """On CPU in fp32 with greedy search every engine computes the same model: one that generates other tokens is
    broken (a wrong split of heads, stale weights), and the evaluation fails naming it instead of reporting it."""
    rates = {"hf": 1.0, "deepspeed": 1.0, "zero": 0.5}
    with pytest.raises(RuntimeError, match=r"engines disagree under greedy fp32 decoding on CPU .*'zero': 0.5"):
        check_agreement(rates, EvaluateConfig(decoding="greedy"))
    assert check_agreement({"hf": 1.0, "deepspeed": 1.0}, EvaluateConfig(decoding="greedy")) is True
    # Sampling draws differently per engine: reported, not required.
    assert check_agreement(rates, EvaluateConfig(decoding="sampling")) is False
